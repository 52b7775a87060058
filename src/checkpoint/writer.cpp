// SafetensorsWriter: header first (fixed by the declared entries), then the tensors' bytes in order.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "checkpoint/dtypes.hpp"
#include "checkpoint/mapping_guard.hpp"
#include "mxmoe/safetensors.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {
namespace {

// "<dir>/.<name>.mxmoe-XXXXXX" created by mkstemp: unique, in OUT's folder (so the final rename stays
// on one file system and is atomic), hidden, and never the name of an existing file.
std::FILE* create_temporary(const std::string& path, std::string* tmp_path) {
  const std::filesystem::path p(path);
  const std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  std::string tmpl = dir + "/." + p.filename().string() + ".mxmoe-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail(ErrorCode::Io, "cannot create a temporary file in '" + dir + "' for '" + path + "': " + std::strerror(errno));
  // mkstemp makes the file 0600; give it the mode a plain create would (0666 less the umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    fail(ErrorCode::Io, "cannot open the temporary '" + tmpl + "': " + std::strerror(errno));
  }
  *tmp_path = tmpl;
  return f;
}

// Moves the finished temporary onto `path`; without `replace`, atomically refuses an existing `path`.
void publish(const std::string& tmp, const std::string& path, bool replace) {
  if (replace) {
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      fail(ErrorCode::Io, "cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) return;
  int err = errno;
  if (err == EINVAL || err == ENOSYS) {  // no RENAME_NOREPLACE here: link() refuses an existing target too
    if (::link(tmp.c_str(), path.c_str()) == 0) {
      ::unlink(tmp.c_str());
      return;
    }
    err = errno;
  }
  if (err == EEXIST) fail(ErrorCode::InvalidArgument, "output '" + path + "' appeared while it was being written; not replacing it");
  fail(ErrorCode::Io, "cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(err));
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<Entry> entries,
                                     const std::map<std::string, std::string>& metadata, bool replace_existing)
    : path_(path), entries_(std::move(entries)), replace_existing_(replace_existing) {
  struct stat st {};
  if (!replace_existing && ::lstat(path.c_str(), &st) == 0)
    fail(ErrorCode::InvalidArgument, "output '" + path + "' exists; not replacing it");
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  for (const auto& e : entries_) {
    if (e.name.empty() || e.name == "__metadata__") fail(ErrorCode::InvalidArgument, "writer '" + path + "': invalid tensor name '" + e.name + "'");
    if (!names.insert(e.name).second) fail(ErrorCode::InvalidArgument, "writer '" + path + "': tensor '" + e.name + "' declared twice");
    for (auto d : e.shape)
      if (d < 0) fail(ErrorCode::Shape, "writer '" + path + "': tensor '" + e.name + "' has negative shape " + shape_str(e.shape));
    const std::int64_t numel = shape_numel(e.shape);
    const checkpoint::SafetensorsDtype* stored =
        e.stored_dtype.empty() ? checkpoint::find_safetensors_dtype(checkpoint::safetensors_dtype_name(e.dtype))
                               : checkpoint::find_safetensors_dtype(e.stored_dtype);
    if (!stored) fail(ErrorCode::DType, "writer '" + path + "': tensor '" + e.name + "' has unknown dtype '" + e.stored_dtype + "'");
    const std::uint64_t bits = static_cast<std::uint64_t>(numel) * static_cast<std::uint64_t>(stored->bits);
    if (bits % 8 != 0)
      fail(ErrorCode::Shape, "writer '" + path + "': " + stored->name + " tensor '" + e.name + "' of shape " + shape_str(e.shape) +
                                 " does not fill whole bytes");
    const std::uint64_t begin = total_;
    total_ += bits / 8;
    ends_.push_back(total_);
    header[e.name] = {{"dtype", stored->name}, {"shape", e.shape}, {"data_offsets", {begin, total_}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  out_ = create_temporary(path_, &tmp_path_);
  checkpoint::register_temp_output(tmp_path_);  // removed by the SIGBUS guard too (mapping_guard.hpp)
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, out_) != 8 || std::fwrite(text.data(), 1, text.size(), out_) != text.size()) {
    const int err = errno;
    std::fclose(out_);  // a throwing constructor runs no destructor: clean up here
    ::unlink(tmp_path_.c_str());
    checkpoint::unregister_temp_output(tmp_path_);
    fail(ErrorCode::Io, "cannot write the header of '" + tmp_path_ + "': " + std::strerror(err));
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (out_) std::fclose(out_);
  if (!finished_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());  // ours alone: mkstemp made it
  if (!tmp_path_.empty()) checkpoint::unregister_temp_output(tmp_path_);
}

void SafetensorsWriter::append(const void* data, std::size_t nbytes) {
  if (finished_) fail(ErrorCode::InvalidArgument, "writer '" + path_ + "': append after finish");
  if (nbytes > total_ - written_)
    fail(ErrorCode::InvalidArgument, "writer '" + path_ + "': " + std::to_string(nbytes) + " bytes appended, but only " +
                                         std::to_string(total_ - written_) + " remain of the declared tensors");
  if (nbytes && std::fwrite(data, 1, nbytes, out_) != nbytes)
    fail(ErrorCode::Io, "cannot write '" + tmp_path_ + "': " + std::strerror(errno));
  written_ += nbytes;
}

void SafetensorsWriter::finish() {
  if (written_ != total_)
    fail(ErrorCode::InvalidArgument, "writer '" + path_ + "': " + std::to_string(written_) + " of " + std::to_string(total_) + " declared bytes written");
  const int closed = std::fclose(out_);
  out_ = nullptr;
  if (closed != 0) fail(ErrorCode::Io, "cannot close '" + tmp_path_ + "'");
  publish(tmp_path_, path_, replace_existing_);
  finished_ = true;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, HostTensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, t.dtype(), t.shape()});
  SafetensorsWriter w(path, std::move(entries), metadata);
  for (const auto& [name, t] : tensors) w.append(t.data(), t.nbytes());
  w.finish();
}

}  // namespace mxmoe
