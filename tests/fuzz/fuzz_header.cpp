// libFuzzer target: any bytes as a whole safetensors file through the header parser. The parser may
// refuse (mxmoe::Error); any other exception, a crash or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>

#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    mxmoe::parse_safetensors_header(data, size, "fuzz");
  } catch (const mxmoe::Error&) {
  }
  return 0;
}
