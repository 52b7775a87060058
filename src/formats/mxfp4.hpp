// MXFP4 (OCP Microscaling): E2M1 elements, one E8M0 scale per 32 elements. Header-only and usable on
// the GPU. The E4M3 codec (NVFP4's scales, W4A8) is in e4m3.hpp, included here.
#pragma once

#include <cmath>
#include <cstdint>

#include "formats/bf16.hpp"
#include "formats/e4m3.hpp"  // e4m3_decode: NVFP4's scales (kept reachable from here)

namespace mxmoe::formats {

constexpr int kMxfp4Group = 32;   // elements per E8M0 scale
constexpr int kNvfp4Group = 16;   // elements per E4M3 scale
constexpr std::uint8_t kE8m0Nan = 0xFF;
constexpr std::uint8_t kE8m0One = 127;  // 2^0
constexpr float kE2m1Max = 6.0f;

// Magnitudes of the eight E2M1 codes 0..7 (sign is bit 3).
MXMOE_HD float e2m1_magnitude(std::uint8_t code3) {
  // code = e1 e0 m: e == 0 is subnormal (0 or 0.5); otherwise (1 + m/2) * 2^(e-1).
  const std::uint8_t e = (code3 >> 1) & 3u, m = code3 & 1u;
  if (e == 0) return m ? 0.5f : 0.0f;
  return (1.0f + 0.5f * m) * static_cast<float>(1 << (e - 1));
}

MXMOE_HD float e2m1_decode(std::uint8_t code) {
  float mag = e2m1_magnitude(code & 7u);
  return (code & 8u) ? -mag : mag;
}

// Nearest E2M1 code, ties to the even code (the one whose mantissa bit is 0), saturating
// at +-6. NaN encodes as +0 (E2M1 has no NaN; callers that care reject NaN before this).
MXMOE_HD std::uint8_t e2m1_encode(float x) {
  const std::uint8_t sign = (x < 0.0f || (x == 0.0f && std::signbit(x))) ? 8u : 0u;
  float a = std::fabs(x);
  if (!(a == a)) return 0;
  // Midpoints between consecutive magnitudes 0,0.5,1,1.5,2,3,4,6; at a tie the even code wins.
  std::uint8_t code;
  if (a < 0.25f) code = 0;
  else if (a == 0.25f) code = 0;
  else if (a < 0.75f) code = 1;
  else if (a == 0.75f) code = 2;
  else if (a < 1.25f) code = 2;
  else if (a == 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a == 1.75f) code = 4;
  else if (a < 2.5f) code = 4;
  else if (a == 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a == 3.5f) code = 6;
  else if (a < 5.0f) code = 6;
  else if (a == 5.0f) code = 6;
  else code = 7;
  return static_cast<std::uint8_t>(sign | code);
}

// Whether code x 2^(b-127) is infinite in float32, i.e. |code| x 2^(b-127) >= 2^128. Every E8M0 byte
// 0x00..0xFE is a valid scale and every product below that bound is exact in float32; only bytes 253
// (2^126: magnitudes 4 and 6) and 254 (2^127: magnitudes 2 and up) can overflow. 0xFF (NaN) is
// refused on its own, so it is not counted here.
MXMOE_HD bool e8m0_product_overflows(std::uint8_t scale, std::uint8_t code) {
  if (scale < 253 || scale == kE8m0Nan) return false;
  return e2m1_magnitude(code & 7u) >= (scale == 253 ? 4.0f : 2.0f);
}

// The first element (flat index into rows x k) of packed E2M1 rows [rows, k/2] with E8M0 scales
// [rows, k/32] whose dequantised value is infinite in float32, or -1.
inline std::int64_t first_e8m0_overflow(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t rows, std::int64_t k) {
  const std::int64_t groups = rows * (k / kMxfp4Group);
  for (std::int64_t g = 0; g < groups; ++g) {
    if (scales[g] < 253 || scales[g] == kE8m0Nan) continue;  // the common case: nothing to look at
    for (std::int64_t i = g * kMxfp4Group; i < (g + 1) * kMxfp4Group; ++i) {
      const std::uint8_t code = (i & 1) ? static_cast<std::uint8_t>(packed[i >> 1] >> 4) : static_cast<std::uint8_t>(packed[i >> 1] & 0xfu);
      if (e8m0_product_overflows(scales[g], code)) return i;
    }
  }
  return -1;
}

// E8M0 byte b is 2^(b-127); 0xFF is NaN.
MXMOE_HD float e8m0_to_float(std::uint8_t b) {
  if (b == kE8m0Nan) return bits_float(0x7fc00000u);
  if (b == 0) return bits_float(0x00400000u);  // 2^-127, an fp32 subnormal
  return bits_float(static_cast<std::uint32_t>(b) << 23);
}

// The E8M0 byte of a float that is an exact power of two within 2^-127..2^127; false otherwise.
MXMOE_HD bool e8m0_from_float(float f, std::uint8_t* out) {
  std::uint32_t u = float_bits(f);
  if (u == 0x00400000u) {
    *out = 0;
    return true;
  }
  if ((u >> 31) != 0) return false;
  std::uint32_t exp = (u >> 23) & 0xffu, man = u & 0x7fffffu;
  if (man != 0 || exp == 0 || exp == 0xffu) return false;
  *out = static_cast<std::uint8_t>(exp);
  return true;
}

// Shared exponent of one block by the OCP rule: floor(log2(amax)) - emax(E2M1) = ... - 2,
// clamped to E8M0's range. An all-zero block gets scale 1.
MXMOE_HD std::uint8_t mxfp4_block_scale(float amax) {
  if (!(amax > 0.0f) || !(amax == amax)) return kE8m0One;
  int e;
  std::frexp(amax, &e);  // amax = f * 2^e with f in [0.5, 1): floor(log2 amax) = e - 1
  int shared = (e - 1) - 2;
  if (shared < -127) shared = -127;
  if (shared > 127) shared = 127;
  return static_cast<std::uint8_t>(shared + 127);
}

// Quantize `n` (a multiple of 32) floats: codes[i] is E2M1 (one per byte, unpacked),
// scales[i/32] is E8M0.
inline void mxfp4_quantize(const float* x, int n, std::uint8_t* codes, std::uint8_t* scales) {
  for (int g = 0; g < n / kMxfp4Group; ++g) {
    const float* blk = x + g * kMxfp4Group;
    float amax = 0.0f;
    for (int i = 0; i < kMxfp4Group; ++i) amax = std::fmax(amax, std::fabs(blk[i]));
    const std::uint8_t sb = mxfp4_block_scale(amax);
    scales[g] = sb;
    // Dividing by a power of two is exact, so rounding happens once, in e2m1_encode.
    const int shared = static_cast<int>(sb) - 127;
    for (int i = 0; i < kMxfp4Group; ++i)
      codes[g * kMxfp4Group + i] = e2m1_encode(std::ldexp(blk[i], -shared));
  }
}

MXMOE_HD float mxfp4_dequantize(std::uint8_t code, std::uint8_t scale) {
  return e2m1_decode(code) * e8m0_to_float(scale);
}

// Packing: two elements per byte along K, low nibble = even index.
MXMOE_HD std::uint8_t pack_nibbles(std::uint8_t even, std::uint8_t odd) {
  return static_cast<std::uint8_t>((even & 0xfu) | ((odd & 0xfu) << 4));
}
MXMOE_HD std::uint8_t nibble_at(const std::uint8_t* packed, std::int64_t index) {
  std::uint8_t byte = packed[index >> 1];
  return (index & 1) ? static_cast<std::uint8_t>(byte >> 4) : static_cast<std::uint8_t>(byte & 0xfu);
}

inline void pack_codes(const std::uint8_t* codes, std::int64_t n, std::uint8_t* packed) {
  for (std::int64_t i = 0; i < n / 2; ++i) packed[i] = pack_nibbles(codes[2 * i], codes[2 * i + 1]);
}

// The E4M3 byte nearest to e2m1(code) x 2^shift (W4A8's weight fold, prepare/w4a8_fold.hpp: exact
// for shifts -8..6). Below 2^-40 every product (at most 6 x 2^shift) is far under half the smallest
// E4M3 (2^-10): a signed zero; above it ldexp is exact in float, so the one rounding is
// e4m3_encode's.
MXMOE_HD std::uint8_t e4m3_of_e2m1(std::uint8_t code, int shift) {
  if (shift < -40) return static_cast<std::uint8_t>(code & 8u ? 0x80u : 0u);
  return e4m3_encode(ldexpf(e2m1_decode(code), shift));  // ldexpf: the same on the host and the GPU
}

}  // namespace mxmoe::formats
