// libFuzzer target: any bytes as the text of a model.safetensors.index.json through the index reader.
// It may refuse (mxmoe::Error); any other exception, a crash or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "checkpoint/index.hpp"
#include "mxmoe/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    mxmoe::checkpoint::parse_index(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const mxmoe::Error&) {
  }
  return 0;
}
