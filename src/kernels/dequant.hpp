// Turning E2M1 nibbles and E8M0 scale bytes into bf16 with integer operations (plain functions, so
// the CPU tests check the very bit patterns the GEMM uses).
//
// An E2M1 code s|e1 e0|m becomes the bf16 of the same value x 2^-126 when the sign goes to bit 15
// and e1 e0 m to bits 8..6: the exponent lands in the low bits of bf16's exponent field and m in the
// top mantissa bit; code 0b001 (0.5) lands as a subnormal, which needs no special case. The tile
// layout (prepare/tile_layout.hpp) puts the two halves of a bf16x2 register in nibbles q and q+4, so
// one shift per field moves both halves at once.
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"

namespace mxmoe::kernels {

// Register P (0..3) of a lane's A fragment, from nibbles P (low half) and P+4 (high half) of
// `word`, each value scaled by 2^-126.
template <int P>
MXMOE_HD std::uint32_t e2m1_pair_bits(std::uint32_t word) {
  static_assert(P >= 0 && P < 4, "a word holds four pairs");
  constexpr int kMagShift = 6 - 4 * P;   // bits 4P..4P+2 -> 6..8
  constexpr int kSignShift = 12 - 4 * P; // bit 4P+3 -> 15
  const std::uint32_t mag = kMagShift >= 0 ? word << (kMagShift >= 0 ? kMagShift : 0) : word >> (kMagShift < 0 ? -kMagShift : 0);
  const std::uint32_t sign = word << kSignShift;
  return (mag & 0x01C001C0u) | (sign & 0x80008000u);
}

// bf16x2 holding 2^(b-1) in both halves: the scale 2^(b-127) times the 2^126 the nibble trick
// left out. bf16's exponent field is b + 126, so this is exact for every b in 0..128.
MXMOE_HD std::uint32_t e8m0_scale_pair_bits(std::uint32_t b) { return ((b + 126u) << 7) * 0x00010001u; }

// The largest E8M0 byte the fast path accepts (2^(b-1) must stay a finite bf16).
constexpr int kMaxFastScaleByte = 128;

}  // namespace mxmoe::kernels
