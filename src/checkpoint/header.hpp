// Parsing and validating a safetensors header against the bytes that follow it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mxmoe/safetensors.hpp"

namespace mxmoe::checkpoint {

// The format caps the header at 100 MB (as the reference implementation does).
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct ParsedHeader {
  std::vector<TensorInfo> tensors;  // in the order of their data offsets
  std::map<std::string, std::string> metadata;
  std::uint64_t data_start = 0;     // offset of the data section in the file
};

ParsedHeader parse_header(const std::uint8_t* data, std::size_t size, const std::string& label);

}  // namespace mxmoe::checkpoint
