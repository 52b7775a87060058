// NVFP4 (NVIDIA's FP4 block format): E2M1 elements, one UE4M3 scale per 16 elements along K, and one
// fp32 global scale per matrix. Header-only and usable on the GPU; E2M1, E4M3 decode and the nibble
// packing are in mxfp4.hpp, shared with MXFP4.
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

constexpr std::uint8_t kUe4m3Nan = 0x7F;
constexpr std::uint8_t kUe4m3Max = 0x7E;  // 448 = 1.75 x 2^8
constexpr float kUe4m3MaxValue = 448.0f;

// A UE4M3 scale byte is valid when it is not NaN and its sign bit is clear.
MXMOE_HD bool ue4m3_valid(std::uint8_t b) { return b < kUe4m3Nan; }

// The value of a valid UE4M3 byte (the E4M3 decode; NaN for 0x7F, negative for a set sign bit).
MXMOE_HD float ue4m3_decode(std::uint8_t b) { return e4m3_decode(b); }

// Nearest UE4M3 byte of x >= 0, ties to the even mantissa, saturating at 448 (+inf included).
// UE4M3 has no sign: negative values and -0 give 0. NaN gives the NaN byte 0x7F, which every check
// of canonical weights refuses.
MXMOE_HD std::uint8_t ue4m3_encode(float x) {
  const std::uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return kUe4m3Nan;
  if ((u >> 31) != 0 || u == 0) return 0;
  if (x >= kUe4m3MaxValue) return kUe4m3Max;
  // Integer rounding of the 24-bit significand m (x = m x 2^(e-150)) to the 3-bit mantissa grid:
  // normals (biased exponent E = e - 120 in 1..15) keep 4 significant bits; below 2^-6 the grid is
  // the subnormal step 2^-9, so the kept bits are fewer (down to none).
  const std::uint32_t e = u >> 23;  // float biased exponent, 0 for float subnormals (all round to 0)
  if (e < 100) return 0;            // below 2^-27: far under half the smallest UE4M3 (2^-10)
  const std::uint32_t m = (u & 0x7fffffu) | 0x800000u;
  // Shift that takes m to units of the grid step at x's magnitude: step 2^(E-7-3) for normals
  // (E = e - 120 >= 1), 2^-9 for subnormals; in units of 2^(e-150) that is 2^(20) or 2^(141-e).
  const std::uint32_t shift = e >= 121 ? 20u : 141u - e;  // 20 .. 41
  if (shift >= 32) return 0;  // x < 2^-19: rounds to 0 (under half a step of 2^-9)
  std::uint32_t q = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (q & 1u))) ++q;
  // q counts grid steps: normals 8..16 (16 carries into the next exponent), subnormals 0..8 (8 is the
  // smallest normal). The byte is (E << 3) + (q - 8) for normals, q for subnormals; both forms are
  // the same sum because the encoding is monotone in steps.
  const std::uint32_t byte = e >= 121 ? ((e - 120u) << 3) + (q - 8u) : q;
  return static_cast<std::uint8_t>(byte > kUe4m3Max ? kUe4m3Max : byte);
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
