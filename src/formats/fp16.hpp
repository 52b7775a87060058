// IEEE binary16 (fp16) as raw 16-bit patterns, next to bf16.hpp: the activations of NVFP4 layers may
// be fp16. Integer-only conversions, so they run on the host and the GPU alike.
#pragma once

#include <cstdint>

#include "formats/bf16.hpp"

namespace mxmoe::formats {

// Exact: every binary16 value (subnormals, infinities, NaN) is a float.
MXMOE_HD float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (man << 13));  // inf, NaN (payload kept)
  if (exp == 0) {  // subnormal: man x 2^-24, exact in float
    const float v = static_cast<float>(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest, ties to even; overflow (|f| >= 65520, the midpoint above the largest half 65504)
// gives infinity; NaN stays a quiet NaN. Exact for any value a binary16 holds.
MXMOE_HD std::uint16_t float_to_fp16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // 65520: rounds past 65504
  if (a >= 0x38800000u) {  // 2^-14 and up: a normal half; drop 13 mantissa bits, rounding to even
    std::uint32_t h = (((a >> 23) - 112u) << 10) | ((a & 0x7fffffu) >> 13);
    const std::uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
    return static_cast<std::uint16_t>(sign | h);
  }
  if (a <= 0x33000000u) return sign;  // at most 2^-25, half the smallest subnormal: ties to even give 0
  // Subnormal half q x 2^-24: the float is m x 2^(e-150) with a 24-bit m, so q = m / 2^(126-e).
  const std::uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;  // 14..24
  std::uint32_t q = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (q & 1u))) ++q;  // q = 0x400 is the smallest normal, correctly
  return static_cast<std::uint16_t>(sign | q);
}

MXMOE_HD float round_to_fp16(float f) { return fp16_to_float(float_to_fp16(f)); }

}  // namespace mxmoe::formats
