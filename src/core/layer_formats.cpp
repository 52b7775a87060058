#include <string>

#include "mxmoe/error.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe {

// The pairs the library runs: MXFP4 (group 32, E8M0) with bf16 activations; NVFP4 (group 16, UE4M3
// and a global scale per matrix) with bf16 or fp16 activations.
void validate_layer_formats(const WeightFormat& f) {
  if (f.group_size != 16 && f.group_size != 32)
    fail(ErrorCode::InvalidArgument, "group size must be 16 (NVFP4, E4M3 scales) or 32 (MXFP4, E8M0 scales), got " +
                                         std::to_string(f.group_size));
  if (f.group_size == 16) {
    if (f.activation_dtype != DType::BF16 && f.activation_dtype != DType::F16)
      fail(ErrorCode::DType, std::string("activations must be bf16 or fp16 for NVFP4 weights, got ") + dtype_name(f.activation_dtype));
    return;
  }
  if (f.activation_dtype == DType::F16)
    fail(ErrorCode::DType, "MXFP4 weights (group 32, E8M0 scales) need bf16 activations, got F16: an E8M0 scale "
                           "2^(b-127) is applied in bf16 exponent arithmetic, and fp16's 5-bit exponent cannot hold it");
  if (f.activation_dtype != DType::BF16)
    fail(ErrorCode::DType, std::string("activations must be bf16 for MXFP4 weights, got ") + dtype_name(f.activation_dtype));
}

}  // namespace mxmoe
