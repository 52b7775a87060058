// SafetensorsWriter: header first (fixed by the declared entries), then the tensors' bytes in order.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "checkpoint/dtypes.hpp"
#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<Entry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), tmp_path_(path + ".partial"), entries_(std::move(entries)) {
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

  out_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!out_) fail(ErrorCode::Io, "cannot create '" + tmp_path_ + "': " + std::strerror(errno));
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, out_) != 8 || std::fwrite(text.data(), 1, text.size(), out_) != text.size())
    fail(ErrorCode::Io, "cannot write the header of '" + tmp_path_ + "'");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (out_) std::fclose(out_);
  if (!finished_) std::remove(tmp_path_.c_str());
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
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    fail(ErrorCode::Io, "cannot rename '" + tmp_path_ + "' to '" + path_ + "': " + std::strerror(errno));
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
