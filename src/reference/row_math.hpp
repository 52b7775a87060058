// The inner loops of the fp32 oracle: dequantising one MXFP4 or NVFP4 row, a dot product, and
// the 16-bit activation types.
#pragma once

#include <cstdint>

#include "formats/bf16.hpp"
#include "formats/e4m3.hpp"
#include "formats/fp16.hpp"
#include "formats/mxfp4.hpp"
#include "mxmoe/tensor.hpp"

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

// Row of `k` packed E2M1 values with one scale byte per `group`: 32 -> E8M0 (MXFP4, as above),
// 16 -> UE4M3 (NVFP4: e2m1 x ue4m3 has at most six significant bits, exact in fp32; the global
// scale is applied to the dot product by the caller).
inline void dequantize_row(const std::uint8_t* packed, const std::uint8_t* scales, int k, int group, float* out) {
  if (group == formats::kMxfp4Group) return dequantize_row(packed, scales, k, out);
  for (int g = 0; g < k / group; ++g) {
    const float s = formats::e4m3_decode(scales[g]);
    for (int i = 0; i < group; ++i) out[g * group + i] = formats::e2m1_decode(formats::nibble_at(packed, static_cast<std::int64_t>(g) * group + i)) * s;
  }
}

// Every E4M3 byte's value (NaN for 0x7F and 0xFF), for decoding folded rows and quantised activations.
inline const float* e4m3_table() {
  static const auto table = [] {
    struct T {
      float v[256];
    } t;
    for (int b = 0; b < 256; ++b) t.v[b] = formats::e4m3_decode(static_cast<std::uint8_t>(b));
    return t;
  }();
  return table.v;
}

// W4A8: quantises the n values of `row` in place to the E4M3 values they encode (formats::fp8_row_scale's
// rule) and returns the row's scale; value x scale is the quantised row.
inline float fp8_quantize_row(float* row, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float a = row[i] < 0.0f ? -row[i] : row[i];
    if (a > amax) amax = a;
  }
  const float scale = formats::fp8_row_scale(amax), inverse = 1.0f / scale;
  const float* table = e4m3_table();
  for (int i = 0; i < n; ++i) row[i] = table[formats::fp8_quantize(row[i], inverse)];
  return scale;
}

// 16-bit activations (bf16 or fp16 bits) to fp32 and back (round to nearest even).
inline float act_to_float(std::uint16_t bits, DType dtype) {
  return dtype == DType::F16 ? formats::fp16_to_float(bits) : formats::bf16_to_float(bits);
}
inline std::uint16_t float_to_act(float v, DType dtype) {
  return dtype == DType::F16 ? formats::float_to_fp16(v) : formats::float_to_bf16(v);
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
