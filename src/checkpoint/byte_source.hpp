// The bytes of one safetensors file: a read-only memory map, or a buffer held in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mxmoe::checkpoint {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

 protected:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Maps `path` read-only; mxmoe::Error (Io) naming the file when it cannot be opened or mapped.
// An empty file maps to size 0 (the header parser refuses it by name).
std::shared_ptr<const ByteSource> map_file(const std::string& path);
std::shared_ptr<const ByteSource> hold_bytes(std::vector<std::uint8_t> bytes);

}  // namespace mxmoe::checkpoint
