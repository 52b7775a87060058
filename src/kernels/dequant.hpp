// Turning E2M1 nibbles and E8M0 scale bytes into bf16 with integer operations (plain functions, so
// the CPU tests check the very bit patterns the GEMM uses).
//
// An E2M1 code s|e1 e0|m becomes the bf16 of the same value x 2^-126 when the sign goes to bit 15
// and e1 e0 m to bits 8..6: the exponent lands in the low bits of bf16's exponent field and m in the
// top mantissa bit; code 0b001 (0.5) lands as a subnormal, which needs no special case. The tile
// layout (kernels/tile_layout.hpp) stores each element's four bits where few operations reach those
// positions, for both bf16 halves of a register at once: register 0 needs one mask, registers 1 and
// 2 a shift and a mask, register 3 three of each.
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"

namespace mxmoe::kernels {

constexpr std::uint32_t kBf16FieldMask = 0x81C081C0u;  // sign and bits 8..6 of both halves

// Register P (0..3) of a lane's A fragment from its fragment word, each value scaled by 2^-126.
template <int P>
MXMOE_HD std::uint32_t e2m1_pair_bits(std::uint32_t word) {
  static_assert(P >= 0 && P < 4, "a word holds four registers");
  if constexpr (P == 0) return word & kBf16FieldMask;
  if constexpr (P == 1) return (word << 3) & kBf16FieldMask;
  if constexpr (P == 2) return (word << 6) & kBf16FieldMask;
  // e1 e0 at 14, 13 -> 8, 7; m at 11 -> 6; sign at 10 -> 15.
  return ((word >> 6) & 0x01800180u) | ((word >> 5) & 0x00400040u) | ((word << 5) & 0x80008000u);
}

// bf16x2 holding 2^(b-1) in both halves: the scale 2^(b-127) times the 2^126 the nibble trick
// left out. bf16's exponent field is b + 126, so this is exact for every b in 0..128.
MXMOE_HD std::uint32_t e8m0_scale_pair_bits(std::uint32_t b) { return ((b + 126u) << 7) * 0x00010001u; }

// The largest E8M0 byte the fast path accepts (2^(b-1) must stay a finite bf16).
constexpr int kMaxFastScaleByte = 128;

}  // namespace mxmoe::kernels
