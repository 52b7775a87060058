// bf16 as raw 16-bit patterns, so host code needs no CUDA headers.
#pragma once

#include <cstdint>
#include <cstring>

#include "formats/host_device.hpp"

namespace mxmoe::formats {

MXMOE_HD std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

MXMOE_HD float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

MXMOE_HD float bf16_to_float(std::uint16_t b) { return bits_float(static_cast<std::uint32_t>(b) << 16); }

// Round to nearest, ties to even; NaN stays a (quiet) NaN.
MXMOE_HD std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>((u + rounding) >> 16);
}

MXMOE_HD float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

}  // namespace mxmoe::formats
