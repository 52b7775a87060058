// Checks and conversions from stored tensors to the canonical dtypes, with errors naming the tensor.
#pragma once

#include <cstdint>
#include <string>

#include "mxmoe/checkpoint.hpp"

namespace mxmoe::layout {

// "[e, r, c]" for a flat index into `shape`.
std::string index_str(const Shape& shape, std::int64_t flat);

// Packed E2M1 weights stored as U8/I8 (shape [..., K/2]) or F4 (shape [..., K]): the logical shape
// with K last. DType error naming the tensor for any other dtype (bf16 weights: run quantize).
Shape packed_logical_shape(const TensorInfo& info);
// The weight as canonical U8 [..., K/2] bytes, no copy; `logical` must equal packed_logical_shape.
HostTensor packed_view(const Checkpoint& ckpt, const std::string& name, const Shape& logical);

// Shape error naming the tensor unless its shape (logical for packed weights) is `expected`.
void expect_shape(const std::string& name, const Shape& found, const Shape& expected, const char* what);

// Format error naming the tensor and index of the first E8M0 NaN byte (0xFF) in U8/F8_E8M0 `t`. Every
// other byte 0x00..0xFE (2^-127..2^127) is a scale; a block where one of them times a code overflows
// float32 (bytes 253 and 254 only) is refused once the codes are known (the loader's check of blocks).
void check_e8m0(const HostTensor& t, const std::string& name);
// Writes `t`'s scales as E8M0 bytes to dst: U8/F8_E8M0 are checked as check_e8m0 does; BF16/F16/F32
// must be exact powers of two in 2^-127..2^127, refused otherwise naming the tensor, index and value
// (and saying whether the value is no power of two or a power of two outside E8M0).
// Returns true when a float conversion happened.
bool scales_to_e8m0(const HostTensor& t, const std::string& name, std::uint8_t* dst);
// U8/F8_E8M0 scales checked for 0xFF, as a view when possible; floats converted to an owned U8 tensor.
HostTensor e8m0_scales(const Checkpoint& ckpt, const std::string& name, bool* converted, bool* zero_copy);

// NVFP4 block scales: U8 or F8_E4M3 bytes, each a UE4M3 (not the NaN byte 0x7F, no sign bit); Format
// error naming the tensor, the index and the byte otherwise, DType error for any other dtype. A view.
HostTensor ue4m3_scales(const Checkpoint& ckpt, const std::string& name);

// BF16/F16/F32 element i as float.
float load_float(const HostTensor& t, std::int64_t i);
// A BF16/F16/F32 tensor as an owned F32 copy; DType error naming the tensor otherwise.
HostTensor to_f32(const Checkpoint& ckpt, const std::string& name);

}  // namespace mxmoe::layout
