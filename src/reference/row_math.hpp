// The two inner loops of the fp32 oracle: dequantising one MXFP4 row and a dot product.
#pragma once

#include <cstdint>

#include "formats/mxfp4.hpp"

namespace mxmoe::reference::detail {

// Row of `k` (a multiple of 32) packed E2M1 values with their E8M0 scales -> fp32. Every
// product code x 2^(b-127) is exact in fp32 for the scale bytes weights use (b <= 252).
inline void dequantize_row(const std::uint8_t* packed, const std::uint8_t* scales, int k, float* out) {
  float lut[16];
  for (int c = 0; c < 16; ++c) lut[c] = formats::e2m1_decode(static_cast<std::uint8_t>(c));
  for (int g = 0; g < k / formats::kMxfp4Group; ++g) {
    const float s = formats::e8m0_to_float(scales[g]);
    const std::uint8_t* p = packed + g * (formats::kMxfp4Group / 2);
    float* o = out + g * formats::kMxfp4Group;
    for (int i = 0; i < formats::kMxfp4Group / 2; ++i) {
      o[2 * i] = lut[p[i] & 0xfu] * s;
      o[2 * i + 1] = lut[p[i] >> 4] * s;
    }
  }
}

// fp32 dot product with 16 independent partial sums, so the compiler can vectorise it; the
// summation order is fixed, so results never depend on the thread count.
inline float dot(const float* a, const float* b, int n) {
  float acc[16] = {};
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  for (int w = 8; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

}  // namespace mxmoe::reference::detail
