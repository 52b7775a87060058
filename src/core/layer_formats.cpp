#include <string>

#include "mxmoe/error.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe {

void validate_layer_formats(const WeightFormat& f) {
  if (f.group_size == 16)
    fail(ErrorCode::Unsupported, "group size 16 is NVFP4 (E2M1 with E4M3 scales per 16): not supported yet by the Hopper "
                                 "kernels, which run MXFP4 (group 32, E8M0 scales)");
  if (f.group_size != 32)
    fail(ErrorCode::InvalidArgument, "group size must be 16 (NVFP4, E4M3 scales) or 32 (MXFP4, E8M0 scales), got " +
                                         std::to_string(f.group_size));
  if (f.activation_dtype == DType::F16)
    fail(ErrorCode::DType, "MXFP4 weights (group 32, E8M0 scales) need bf16 activations, got F16: an E8M0 scale "
                           "2^(b-127) is applied in bf16 exponent arithmetic, and fp16's 5-bit exponent cannot hold it");
  if (f.activation_dtype != DType::BF16)
    fail(ErrorCode::DType, std::string("activations must be bf16 for MXFP4 weights, got ") + dtype_name(f.activation_dtype));
}

}  // namespace mxmoe
