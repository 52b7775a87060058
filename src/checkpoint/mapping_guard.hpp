// A file that shrinks while it is mapped turns reads past its new end into SIGBUS. mxmoe's views are
// zero-copy pointers into the maps and are read everywhere (oracle, writer, GPU upload), so checking
// the size before each read cannot close the window. Instead every map registers its address range
// and file name here, and install_mapped_file_guard() (public, called by the CLI's main) installs a
// SIGBUS handler that, for an address inside a registered map, prints one line naming the file,
// removes the temporaries of unfinished outputs, and exits with status 2. A SIGBUS elsewhere keeps
// its default action. The registry is a fixed array of atomics: the handler reads it without locks.
#pragma once

#include <cstddef>
#include <string>

namespace mxmoe::checkpoint {

// Registers [begin, begin + size) as the map of `path`; silently unguarded if the table is full.
void register_mapping(const void* begin, std::size_t size, const std::string& path);
void unregister_mapping(const void* begin);

// A temporary output file the handler deletes before exiting (SafetensorsWriter's).
void register_temp_output(const std::string& path);
void unregister_temp_output(const std::string& path);

}  // namespace mxmoe::checkpoint
