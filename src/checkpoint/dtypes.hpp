// The dtypes of the safetensors format: name in the header, bits per element, and the mxmoe DType
// when mxmoe computes with it.
#pragma once

#include <optional>
#include <string>

#include "mxmoe/tensor.hpp"

namespace mxmoe::checkpoint {

struct SafetensorsDtype {
  const char* name;
  int bits;                   // per element; F4 is 4, F6_* are 6
  std::optional<DType> dtype;
};

// The entry for a header dtype string, or nullptr when the format defines no such dtype.
const SafetensorsDtype* find_safetensors_dtype(const std::string& name);
// The header string for a DType (F4_E2M1 is "F4").
const char* safetensors_dtype_name(DType dtype);

}  // namespace mxmoe::checkpoint
