// Turning E2M1 nibbles and E8M0 / UE4M3 scale bytes into bf16 or fp16 with integer operations
// (plain functions, so the CPU tests check the very bit patterns the GEMM uses; the GEMM's weight
// formats, kernels/gemm/weight_formats.cuh, multiply them with the exact bf16x2/f16x2 multiply).
//
// An E2M1 code s|e1 e0|m becomes the bf16 of the same value x 2^-126 when the sign goes to bit 15
// and e1 e0 m to bits 8..6: the exponent lands in the low bits of bf16's exponent field and m in the
// top mantissa bit; code 0b001 (0.5) lands as a subnormal, which needs no special case. The tile
// layout (kernels/tile_layout.hpp) stores each element's four bits where few operations reach those
// positions, for both bf16 halves of a register at once: register 0 needs one mask, registers 1 and
// 2 a shift or rotation and a mask, register 3 two of each: 9 integer operations per 8 values, 7 of
// them on the ALU pipe and 2 on the FMA pipe (with the 4 HMUL2). The sets of source bits are
// rotations of the mask 0x81C081C0; four rotations cannot tile the 32 bits ({0,1,2,9} does not tile
// Z/16), so one register takes two pieces: its e1 bits from one rotation, the rest from another.
// The earlier layout (shifts by 0, 3 and 6 and a three-piece register 3) took 11: 8 on the ALU
// pipe, 3 on the FMA pipe.
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"

namespace mxmoe::kernels {

constexpr std::uint32_t kBf16FieldMask = 0x81C081C0u;  // sign and bits 8..6 of both halves

// Left rotation (one SHF.L.W on the GPU; the CPU tests run the same expression).
template <int N>
MXMOE_HD std::uint32_t rotl32(std::uint32_t x) {
  static_assert(N > 0 && N < 32, "a rotation by 1..31");
#ifdef __CUDA_ARCH__
  return __funnelshift_l(x, x, N);
#else
  return x << N | x >> (32 - N);
#endif
}

// Register P (0..3) of a lane's A fragment from its fragment word, each value scaled by 2^-126.
template <int P>
MXMOE_HD std::uint32_t e2m1_pair_bits(std::uint32_t word) {
  static_assert(P >= 0 && P < 4, "a word holds four registers");
  if constexpr (P == 0) return word & kBf16FieldMask;
  // Plain left shifts where no needed bit wraps (ptxas issues them as IMAD.SHL on the FMA pipe,
  // beside the LOP3s and rotations on the ALU pipe: each pipe takes a warp instruction every other
  // cycle, so the split matters as much as the count; the all-rotation form, 9 ALU operations per 8
  // values, measured slower than the old layout's 8).
  if constexpr (P == 1) return (word << 4) & kBf16FieldMask;
  if constexpr (P == 2) return rotl32<10>(word) & kBf16FieldMask;
  // e1 (bits 8 and 24) from the rotation by 14, sign, e0 and m from the shift by 6.
  return ((word << 6) & (kBf16FieldMask & ~0x01000100u)) | (rotl32<14>(word) & 0x01000100u);
}

// bf16x2 holding 2^(b-1) in both halves: the scale 2^(b-127) times the 2^126 the nibble trick
// left out. bf16's exponent field is b + 126, so this is exact for every b in 0..128.
MXMOE_HD std::uint32_t e8m0_scale_pair_bits(std::uint32_t b) { return ((b + 126u) << 7) * 0x00010001u; }

// CUDA's __byte_perm (prmt.b32 in its default mode) on the host too, so the CPU tests check the
// device's expression: byte n of the result is byte (s >> 4n) & 7 of the eight bytes {x, y} (x the
// low four). Callers keep each selector nibble's bit 3 clear (that bit asks prmt for sign
// replication, which the host twin does not model). The W4A16 scale pairs and the W4A8 magnitude
// lookups (w4a8_regs.hpp) both use it.
MXMOE_HD std::uint32_t byte_perm(std::uint32_t x, std::uint32_t y, std::uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(x, y, s);
#else
  const std::uint64_t xy = (static_cast<std::uint64_t>(y) << 32) | x;
  std::uint32_t r = 0;
  for (int n = 0; n < 4; ++n) r |= static_cast<std::uint32_t>((xy >> (8 * ((s >> (4 * n)) & 7u))) & 0xffu) << (8 * n);
  return r;
#endif
}

// e8m0_scale_pair_bits of byte I of a scale word in two operations: a byte permute puts the byte in
// both halves (0x00bb00bb) and one multiply-add makes (b + 126) << 7 of each half; no carry crosses
// the halves for b <= 254. (The shift-and-mask form took three: extract, mask, multiply-add.)
template <int I>
MXMOE_HD std::uint32_t e8m0_scale_pair_bits_of_byte(std::uint32_t word) {
  static_assert(I >= 0 && I < 4, "a word holds four scale bytes");
  return byte_perm(word, 0u, 0x4040u + 0x0101u * I) * 128u + 0x3F003F00u;
}

// The largest E8M0 byte the one-multiply path takes (2^(b-1) must stay a finite bf16).
constexpr int kMaxFastScaleByte = 128;

// Every E8M0 byte 0..254 in two exact multiplies: v 2^-126 x 2^(min(b,128)-1) is v 2^(min(b,128)-127),
// finite for every code; x 2^(max(b,128)-128) then gives v 2^(b-127), which is what the oracle
// computes (an infinity exactly where the float value overflows). The second factor is 1 for b <= 128.
struct ScalePairBits {
  std::uint32_t first, second;
};
MXMOE_HD ScalePairBits e8m0_wide_scale_pair_bits(std::uint32_t b) {
  const std::uint32_t low = b < 128u ? b : 128u, high = b > 128u ? b : 128u;
  return {e8m0_scale_pair_bits(low), ((high - 1u) << 7) * 0x00010001u};
}

// Whether any of the four E8M0 bytes of `word` is above 128 (top bit set and low seven bits not all
// zero), with three integer operations: the test that sends a warp to the two-multiply path only for
// the chunks that hold such a byte.
MXMOE_HD bool any_scale_byte_above_128(std::uint32_t word) {
  return (((word & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) & word & 0x80808080u) != 0;
}

// fp16 twin of e2m1_pair_bits, on the fp16 tile layout (TiledShape::f16): bits to fp16's sign 15,
// exponent 11..10 and top mantissa bit 9, which makes each value x 2^-14 (code 0b001, 0.5, lands as
// a subnormal).
template <int P>
MXMOE_HD std::uint32_t e2m1_pair_bits_f16(std::uint32_t word) {
  static_assert(P >= 0 && P < 4, "a word holds four registers");
  constexpr std::uint32_t kField = 0x0E000E00u, kSign = 0x80008000u;  // bits 11..9 and 15 of both halves
  if constexpr (P == 0) return word & (kField | kSign);                          // m e at 9..11, s 15
  if constexpr (P == 1) return (word << 3) & (kField | kSign);                   // m e at 6..8, s 12
  if constexpr (P == 2) return ((word << 6) & kField) | ((word << 2) & kSign);   // m e at 3..5, s 13
  return ((word << 9) & kField) | ((word << 1) & kSign);                         // m e at 0..2, s 14
}

// NVFP4's prepared scale code (tiling::nvfp4_scale_code: (E + 9) << 3 | m for s = 1.m x 2^E) as a
// pair in both halves, with one integer multiply-add and no carry between the halves:
//  bf16: s x 2^118, exponent field E + 245 = (code >> 3) + 236;
//  fp16: s x 2^6,   exponent field E + 21  = (code >> 3) + 12.
// A nibble reads v x 2^-126 (bf16) or v x 2^-14 (fp16), so a weight becomes v x s x 2^-8: at most six
// significant bits, all at or above 2^-18, exact in both; the epilogue multiplies the fp32 dot
// product by 2^kNvfp4Fold and the global scale. (The zero-scale code decodes to a finite value; its
// block's codes are zero.)
MXMOE_HD std::uint32_t nvfp4_code_bf16_pair_bits(std::uint32_t code) { return code * 0x00100010u + 0x76007600u; }
MXMOE_HD std::uint32_t nvfp4_code_f16_pair_bits(std::uint32_t code) { return code * 0x00800080u + 0x30003000u; }
constexpr int kNvfp4Fold = 8;

}  // namespace mxmoe::kernels
