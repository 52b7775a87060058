// Opening checkpoint files without blocking: a named pipe, a device or a directory where a file is
// expected is refused by stat() before any open(), so `mxmoe inspect FIFO` cannot hang.
#pragma once

#include <cstdint>
#include <string>

namespace mxmoe::checkpoint {

// The file's type in words ("a directory", "a named pipe (FIFO)", ...) for a stat mode.
const char* file_kind(unsigned mode);

// Opens `path` read-only. It must be a regular file: stat() is checked first, then the file is opened
// with O_NONBLOCK (a FIFO swapped in between cannot block the open either) and fstat() must show the
// same regular file. `what` names the role in errors ("checkpoint file", "index", "config").
// Returns the descriptor (the caller closes it) and the size. mxmoe::Error (Io/NotFound) otherwise.
int open_regular_file(const std::string& path, const std::string& what, std::uint64_t* size);

// The whole text of a small regular file (an index, a config.json), at most `max_bytes`.
std::string read_regular_text(const std::string& path, const std::string& what, std::uint64_t max_bytes);

}  // namespace mxmoe::checkpoint
