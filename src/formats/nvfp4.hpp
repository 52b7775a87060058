// NVFP4 (NVIDIA's FP4 block format): E2M1 elements, one UE4M3 scale per 16 elements along K, and one
// fp32 global scale per matrix. Header-only and usable on the GPU; E2M1 and the nibble packing are in
// mxfp4.hpp, shared with MXFP4, the E4M3 codec in e4m3.hpp.
//
// A weight is e2m1 x ue4m3 x global. UE4M3 is E4M3 (bias 7, no infinities) with the sign bit clear:
// bytes 0x00..0x7E are 0, 2^-9 .. 448; 0x7F is NaN and bytes with bit 7 set are not UE4M3 (canonical
// weights refuse both, CanonicalMoeWeights::validate).
//
// Quantisation follows NVIDIA TensorRT Model Optimizer (ModelOpt, NVFP4QTensor), all in fp32:
//   g = amax(matrix) / (6 x 448)                     the global scale ("weight_scale_2"), one per matrix:
//                                                    per expert per projection, gate and up apart
//   s = ue4m3(amax(block of 16) / (6 x g))           the block scale ("weight_scale"), round to nearest
//                                                    even, saturating at 448
//   code = e2m1(x / (float(s) x g))                  round to nearest even, saturating at 6
// Choices where the rule divides by zero: an all-zero matrix gets g = 1; a block whose scale is 0 (an
// all-zero block, or one so small next to the matrix's amax that s rounds to 0) gets zero codes, so it
// dequantises to zeros (ModelOpt stores scale 1.0 for all-zero blocks in some versions; the weights
// are zero either way).
#pragma once

#include <cstdint>

#include "formats/mxfp4.hpp"

namespace mxmoe::formats {

constexpr std::uint8_t kUe4m3Nan = kE4m3Nan;
constexpr std::uint8_t kUe4m3Max = kE4m3MaxMagnitude;  // 448 = 1.75 x 2^8
constexpr float kUe4m3MaxValue = kE4m3MaxValue;

// A UE4M3 scale byte is valid when it is not NaN and its sign bit is clear.
MXMOE_HD bool ue4m3_valid(std::uint8_t b) { return b < kUe4m3Nan; }

// The value of a valid UE4M3 byte (the E4M3 decode; NaN for 0x7F, negative for a set sign bit).
MXMOE_HD float ue4m3_decode(std::uint8_t b) { return e4m3_decode(b); }

// Nearest UE4M3 byte of x >= 0, ties to the even mantissa, saturating at 448 (+inf included): the
// magnitude encoder of e4m3.hpp. UE4M3 has no sign: negative values and -0 give 0. NaN gives the NaN
// byte 0x7F, which every check of canonical weights refuses.
MXMOE_HD std::uint8_t ue4m3_encode(float x) {
  const std::uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return kUe4m3Nan;
  if ((u >> 31) != 0) return 0;
  return e4m3_encode_magnitude(u);
}

// g = amax / (6 x 448), 1 for an all-zero matrix (module comment). amax must be finite.
MXMOE_HD float nvfp4_global_scale(float amax) {
  if (!(amax > 0.0f)) return 1.0f;
  return amax / (6.0f * kUe4m3MaxValue);
}

// Quantizes `n` (a multiple of 16) finite floats of one matrix whose global scale is `global`:
// codes[i] is E2M1 (one per byte, unpacked), scales[i/16] is UE4M3 (module comment's rule).
inline void nvfp4_quantize(const float* x, std::int64_t n, float global, std::uint8_t* codes, std::uint8_t* scales) {
  const float scale_denominator = 6.0f * global;
  for (std::int64_t b = 0; b < n / kNvfp4Group; ++b) {
    const float* blk = x + b * kNvfp4Group;
    float amax = 0.0f;
    for (int i = 0; i < kNvfp4Group; ++i) amax = std::fmax(amax, std::fabs(blk[i]));
    const std::uint8_t s = ue4m3_encode(amax / scale_denominator);
    scales[b] = s;
    const float step = ue4m3_decode(s) * global;  // fp32 product, as ModelOpt divides by it
    for (int i = 0; i < kNvfp4Group; ++i)
      codes[b * kNvfp4Group + i] = s == 0 || !(step > 0.0f) ? 0 : e2m1_encode(blk[i] / step);
  }
}

// An E2M1 code times its block scale, without the global scale (which multiplies a row's dot product).
MXMOE_HD float nvfp4_dequantize(std::uint8_t code, std::uint8_t scale) { return e2m1_decode(code) * ue4m3_decode(scale); }

}  // namespace mxmoe::formats
