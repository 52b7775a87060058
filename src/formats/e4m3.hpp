// FP8 E4M3 (OCP "E4M3FN"): sign bit 7, four exponent bits with bias 7, three mantissa bits, no
// infinities; 0x7F and 0xFF are NaN. Values: subnormals man/8 x 2^-6 (man 1..7, so 2^-9 .. 7 x 2^-9),
// normals (1 + man/8) x 2^(exp-7) for exp 1..15 (exp 15 with man 7 is NaN), largest 448 = 1.75 x 2^8.
// One codec for every user: NVFP4's unsigned block scales (UE4M3, nvfp4.hpp wraps the magnitude
// encoder) and W4A8's activations and folded weights (issue 14). Header-only, __host__ __device__.
#pragma once

#include <cmath>
#include <cstdint>

#include "formats/bf16.hpp"

namespace mxmoe::formats {

constexpr std::uint8_t kE4m3Nan = 0x7F;      // also 0xFF
constexpr std::uint8_t kE4m3MaxMagnitude = 0x7E;  // 448
constexpr float kE4m3MaxValue = 448.0f;

MXMOE_HD bool e4m3_is_nan(std::uint8_t b) { return (b & 0x7fu) == kE4m3Nan; }

MXMOE_HD float e4m3_decode(std::uint8_t b) {
  const std::uint32_t sign = b >> 7, exp = (b >> 3) & 0xfu, man = b & 7u;
  float v;
  if (exp == 0xfu && man == 7u) return bits_float(0x7fc00000u);
  if (exp == 0) v = static_cast<float>(man) * (1.0f / 512.0f);  // man/8 * 2^-6
  else v = (1.0f + static_cast<float>(man) / 8.0f) * std::ldexp(1.0f, static_cast<int>(exp) - 7);
  return sign ? -v : v;
}

// The E4M3 byte (sign clear, 0x00..0x7E) nearest to |x| for the float bits `a` of a finite or infinite
// |x| (sign bit clear, not NaN), ties to the even mantissa, saturating at 448 (infinity included).
MXMOE_HD std::uint8_t e4m3_encode_magnitude(std::uint32_t a) {
  if (a >= 0x43e00000u) return kE4m3MaxMagnitude;  // |x| >= 448: saturate (no byte above 448 is finite)
  // Integer rounding of the 24-bit significand m (|x| = m x 2^(e-150)) to the 3-bit mantissa grid:
  // normals (biased exponent E = e - 120 in 1..15) keep 4 significant bits; below 2^-6 the grid is
  // the subnormal step 2^-9, so the kept bits are fewer (down to none).
  const std::uint32_t e = a >> 23;  // float biased exponent, 0 for float subnormals (all round to 0)
  if (e < 100) return 0;            // below 2^-27: far under half the smallest E4M3 (2^-10)
  const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
  // Shift that takes m to units of the grid step at |x|'s magnitude: step 2^(E-7-3) for normals
  // (E = e - 120 >= 1), 2^-9 for subnormals; in units of 2^(e-150) that is 2^(20) or 2^(141-e).
  const std::uint32_t shift = e >= 121 ? 20u : 141u - e;  // 20 .. 41
  if (shift >= 32) return 0;  // |x| < 2^-19: rounds to 0 (under half a step of 2^-9)
  std::uint32_t q = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (q & 1u))) ++q;
  // q counts grid steps: normals 8..16 (16 carries into the next exponent), subnormals 0..8 (8 is the
  // smallest normal). The byte is (E << 3) + (q - 8) for normals, q for subnormals; both forms are
  // the same sum because the encoding is monotone in steps. Only 448 < |x| < 464 could reach 0x7F, and
  // those were saturated above; the clamp is a second guard.
  const std::uint32_t byte = e >= 121 ? ((e - 120u) << 3) + (q - 8u) : q;
  return static_cast<std::uint8_t>(byte > kE4m3MaxMagnitude ? kE4m3MaxMagnitude : byte);
}

// Nearest E4M3 byte of x, ties to the even mantissa, saturating at +-448 (infinities included), the
// sign kept (-0 and negative values that round to zero give 0x80), as Hopper's
// cvt.rn.satfinite.e4m3x2.f32 does. NaN gives the NaN byte 0x7F: callers refuse NaN before this (or let
// it propagate as NaN, never as a number).
MXMOE_HD std::uint8_t e4m3_encode(float x) {
  const std::uint32_t u = float_bits(x), a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return kE4m3Nan;
  return static_cast<std::uint8_t>(((u >> 24) & 0x80u) | e4m3_encode_magnitude(a));
}

MXMOE_HD float round_to_e4m3(float x) { return e4m3_decode(e4m3_encode(x)); }

// Per-row FP8 quantisation of activations (W4A8, issue 14), one fp32 scale per row of values x:
//   amax  = max |x| over the row (NaN elements skipped; they encode to NaN bytes below)
//   scale = amax / 448, at least 2^-126 (so that 1 / scale is finite), and 1 when amax is 0
//   q     = e4m3_encode(x * (1 / scale))      the reciprocal rounded once per row, then one multiply
// and the row's value is e4m3_decode(q) x scale. These two helpers are the rule for the CPU oracle and
// the GPU alike.
constexpr float kFp8MinRowScale = 1.17549435e-38f;  // 2^-126
MXMOE_HD float fp8_row_scale(float amax) {
  if (!(amax > 0.0f)) return 1.0f;
  const float s = amax / kE4m3MaxValue;
  return s < kFp8MinRowScale ? kFp8MinRowScale : s;
}
MXMOE_HD std::uint8_t fp8_quantize(float x, float inverse_scale) { return e4m3_encode(x * inverse_scale); }

}  // namespace mxmoe::formats
