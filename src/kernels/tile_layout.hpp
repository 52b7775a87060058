// The kernel's tile layout of MXFP4 weights: one mapping, shared by the GPU prepare kernel, its
// CPU twin and the GEMM that reads it.
//
// A weight matrix of one expert is N rows (output features) x K (reduction), packed E2M1. The GEMM
// puts weight rows in the M slot of mma.sync.m16n8k16 (tokens in N), so the unit is a 16-row tile
// x 64-K chunk, stored as 512 contiguous bytes: lane l (g = l/4, t = l%4) of a warp owns bytes
// [16l, 16l+16), four 32-bit words, word s for the k16 step s. Inside a word the eight nibbles are
// the eight A-fragment elements of that lane, placed so that a mask and at most two shifts or
// rotations turn a pair into a bf16x2 register (nibble q and q+4 make one register):
//   q = 0: (row g,   k 2t)    q = 4: (row g,   k 2t+1)     -> A register 0
//   q = 1: (row g+8, k 2t)    q = 5: (row g+8, k 2t+1)     -> A register 1
//   q = 2: (row g,   k 2t+8)  q = 6: (row g,   k 2t+9)     -> A register 2
//   q = 3: (row g+8, k 2t+8)  q = 7: (row g+8, k 2t+9)     -> A register 3
// (k relative to 64*chunk + 16*s). E2M1 packs k and k+1 into one byte (low nibble even), so
// register P of lane (g,t) takes both nibbles of one canonical byte: the low nibble for its low
// bf16 half, the high nibble for its high half.
// The eight elements' bits (m, e0, e1, sign) sit in the 32-bit word where one mask (register 0), a
// shift or rotation and a mask (registers 1, 2) or two of each (register 3) move them to bf16's bits
// 6, 7, 8 and 15 of the low half and 22, 23, 24, 31 of the high one (kernels/dequant.hpp,
// e2m1_pair_bits; a left shift wherever no needed bit wraps):
//   register 0: low m 6, e0 7, e1 8, sign 15      high m 22, e0 23, e1 24, sign 31   (mask)
//   register 1: low m 2, e0 3, e1 4, sign 11      high m 18, e0 19, e1 20, sign 27   (shift 4)
//   register 2: low m 28, e0 29, e1 30, sign 5    high m 12, e0 13, e1 14, sign 21   (rotate 10)
//   register 3: low m 0, e0 1, e1 26, sign 9      high m 16, e0 17, e1 10, sign 25   (shift 6; e1: rotate 14)
// fp16 operands (NVFP4 with fp16 activations) take a layout of their own, placed for fp16's sign 15,
// exponent 11..10 and top mantissa bit 9 (see kernels/dequant.hpp, e2m1_pair_bits_f16):
//   register 0: m 9, e0 10, e1 11, sign 15   register 1: m 6, e0 7, e1 8, sign 12
//   register 2: m 3, e0 4, e1 5, sign 13     register 3: m 0, e0 1, e1 2, sign 14
// (one mask, one shift and a mask, then two shifts for each of the last two: 11 operations per 8
// values, against the bf16 layout's 9; fp16 on the bf16 layout took 17). TiledShape::f16 selects it.
// The layout is a permutation of the canonical bits: the CPU twin's inverse recovers them exactly.
// Chunks are ordered [tile][chunk], so one tile's K range is contiguous. K is padded to a multiple
// of 64 with zero codes.
//
// Scales, MXFP4 (group 32): per (tile, chunk) 32 bytes, byte g*4 + grp*2 + half is the E8M0 scale
// of row g + 8*half for the 32-wide group grp of the chunk, so lane (g, t) fetches its four with one
// 32-bit load. Padding groups get 127 (scale 1; their weights are zero).
// Scales, NVFP4 (group 16): per (tile, chunk) 64 bytes, byte g*8 + step*2 + half is the scale of
// row g + 8*half for the 16-wide group of k16 step `step` (a group is exactly one MMA step), so
// lane (g, t) fetches its eight with one 64-bit load. Not the UE4M3 byte itself but its prepared
// code (nvfp4_scale_code below), from which one integer multiply-add makes the lifted bf16 or fp16
// scale of both register halves. Padding groups get the code of 1.0. A block whose scale is 0 gets
// kNvfp4ZeroScaleCode and its codes are zeroed (its weights are 0 whatever the codes).
//
// Row order: for w2 the identity. For w13 the rows are interleaved in eights, tile j holding gate
// rows 8j..8j+7 then up rows I+8j..I+8j+7, so each lane's accumulators hold the gate and the up
// value of the same intermediate feature (rows g and g+8) and the activation needs no exchange.
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"

namespace mxmoe::tiling {

constexpr int kTileRows = 16;
constexpr int kChunkK = 64;
constexpr int kChunkBytes = kTileRows * kChunkK / 2;  // 512
// Scale bytes per (tile, chunk) for a quantisation group of `group` (32: E8M0, 16: UE4M3).
MXMOE_HD constexpr int chunk_scale_bytes(int group) { return kTileRows * (kChunkK / group); }
constexpr std::uint8_t kPadScale = 127;  // E8M0 1.0

// NVFP4's prepared scale code. A UE4M3 value s > 0 is exactly 1.m x 2^E with E in -9..8 and m three
// bits (its subnormals m' x 2^-9 normalised), stored as (E + 9) << 3 | m: 0..143. The kernel turns it
// into s x 2^118 in bf16 (exponent field E + 245, i.e. code << 4 plus 236 << 7) or s x 2^6 in fp16
// (field E + 21: code << 7 plus 12 << 10), each half at once (kernels/dequant.hpp). s = 0 has no
// such form: kNvfp4ZeroScaleCode (which decodes to a finite value) and zeroed codes stand for it.
constexpr std::uint8_t kNvfp4ZeroScaleCode = 0xFF;
MXMOE_HD std::uint8_t nvfp4_scale_code(std::uint8_t ue4m3) {
  const int e = (ue4m3 >> 3) & 15, m = ue4m3 & 7;
  if (e > 0) return static_cast<std::uint8_t>((e - 7 + 9) << 3 | m);
  if (m == 0) return kNvfp4ZeroScaleCode;
  const int p = m >= 4 ? 2 : m >= 2 ? 1 : 0;  // m x 2^-9 = 1.f x 2^(p-9)
  return static_cast<std::uint8_t>((p - 9 + 9) << 3 | ((m - (1 << p)) << (3 - p)));
}
// The inverse (the UE4M3 byte of a code), for the CPU twin's untile.
MXMOE_HD std::uint8_t nvfp4_scale_from_code(std::uint8_t code) {
  if (code == kNvfp4ZeroScaleCode) return 0;
  const int E = (code >> 3) - 9, m = code & 7;
  if (E >= -6) return static_cast<std::uint8_t>((E + 7) << 3 | m);
  return static_cast<std::uint8_t>(((8 + m) << (E + 9)) >> 3);  // back to a subnormal m' x 2^-9
}
constexpr std::uint8_t kPadScaleNvfp4 = (0 + 9) << 3;  // 1.0

struct TiledShape {
  int rows;        // N, a multiple of 16
  int k;           // K, a multiple of the group (MXFP4 32, NVFP4 16)
  bool gate_up;    // w13: interleave gate/up rows in eights
  int group = 32;  // 32: MXFP4 (E8M0 scales), 16: NVFP4 (UE4M3 scales)
  bool f16 = false;  // the fp16 bit placement (NVFP4 with fp16 activations)

  MXMOE_HD int tiles() const { return rows / kTileRows; }
  MXMOE_HD int chunks() const { return (k + kChunkK - 1) / kChunkK; }
  MXMOE_HD int groups() const { return k / group; }  // scale columns of a canonical row
  MXMOE_HD int chunk_scale_bytes() const { return tiling::chunk_scale_bytes(group); }
  MXMOE_HD std::int64_t weight_bytes() const { return static_cast<std::int64_t>(tiles()) * chunks() * kChunkBytes; }
  MXMOE_HD std::int64_t scale_bytes() const { return static_cast<std::int64_t>(tiles()) * chunks() * chunk_scale_bytes(); }
};

// Canonical row of the prepared row `row` (tile*16 + r).
MXMOE_HD int canonical_row(const TiledShape& s, int row) {
  if (!s.gate_up) return row;
  const int tile = row / kTileRows, r = row % kTileRows;
  const int half_rows = s.rows / 2;  // I
  return r < 8 ? tile * 8 + r : half_rows + tile * 8 + (r - 8);
}

// Canonical byte of (row, byte index along K) or 0 past K: the zero padding. NVFP4 (`scales` given,
// group 16): also 0 inside a block whose scale is 0.
MXMOE_HD std::uint8_t canonical_byte(const std::uint8_t* mat, const TiledShape& s, int crow, int kbyte,
                                     const std::uint8_t* scales = nullptr) {
  if (kbyte >= s.k / 2) return 0;
  if (scales && s.group == 16 && scales[static_cast<std::int64_t>(crow) * s.groups() + kbyte / 8] == 0) return 0;
  return mat[static_cast<std::int64_t>(crow) * (s.k / 2) + kbyte];
}

// The word bits holding E2M1 `code` (s e1 e0 m) as the element of A register `reg`, half `half`
// (0: the low bf16, the canonical byte's low nibble), in the bf16 layout or (f16) the fp16 one.
MXMOE_HD std::uint32_t place_element(std::uint32_t code, int reg, int half, bool f16 = false) {
  if (f16) {  // per 16-bit half: m e0 e1 contiguous from bit 9, 6, 3, 0; sign at 15, 12, 13, 14
    const int mag = 9 - 3 * reg, sign = reg == 0 ? 15 : 11 + reg;
    return ((code & 7u) << mag | ((code >> 3) & 1u) << sign) << (16 * half);
  }
  // The table above: bit positions of m, e0, e1 and sign.
  constexpr int kBits[4][2][4] = {{{6, 7, 8, 15}, {22, 23, 24, 31}},
                                  {{2, 3, 4, 11}, {18, 19, 20, 27}},
                                  {{28, 29, 30, 5}, {12, 13, 14, 21}},
                                  {{0, 1, 26, 9}, {16, 17, 10, 25}}};
  std::uint32_t w = 0;
  for (int b = 0; b < 4; ++b) w |= ((code >> b) & 1u) << kBits[reg][half][b];
  return w;
}

// A fragment word from the four canonical bytes feeding registers 0..3.
MXMOE_HD std::uint32_t fragment_word(std::uint32_t b0, std::uint32_t b1, std::uint32_t b2, std::uint32_t b3, bool f16 = false) {
  const std::uint32_t bytes[4] = {b0, b1, b2, b3};
  std::uint32_t w = 0;
  for (int reg = 0; reg < 4; ++reg) w |= place_element(bytes[reg] & 15u, reg, 0, f16) | place_element(bytes[reg] >> 4, reg, 1, f16);
  return w;
}

// Word s of lane (g, t) of tile `tile`, chunk `chunk`, from the canonical packed matrix [N, K/2]
// (and, for NVFP4, its canonical scales [N, K/16], for the blocks of scale 0).
MXMOE_HD std::uint32_t tiled_word(const std::uint8_t* mat, const TiledShape& s, int tile, int chunk, int lane, int step,
                                  const std::uint8_t* scales = nullptr) {
  const int g = lane / 4, t = lane % 4;
  const int row_lo = canonical_row(s, tile * kTileRows + g), row_hi = canonical_row(s, tile * kTileRows + g + 8);
  const int kb = chunk * (kChunkK / 2) + step * 8 + t;  // byte of k = 64 chunk + 16 step + 2t
  return fragment_word(canonical_byte(mat, s, row_lo, kb, scales), canonical_byte(mat, s, row_hi, kb, scales),
                       canonical_byte(mat, s, row_lo, kb + 4, scales), canonical_byte(mat, s, row_hi, kb + 4, scales), s.f16);
}

// Byte offset of word `step` of `lane` in tile/chunk.
MXMOE_HD std::int64_t tiled_word_offset(const TiledShape& s, int tile, int chunk, int lane, int step) {
  return (static_cast<std::int64_t>(tile) * s.chunks() + chunk) * kChunkBytes + lane * 16 + step * 4;
}

// Scale byte at position `i` (0..chunk_scale_bytes()-1) of tile/chunk, from canonical scales
// [N, K/group].
MXMOE_HD std::uint8_t tiled_scale(const std::uint8_t* scales, const TiledShape& s, int tile, int chunk, int i) {
  const int per_row = s.chunk_scale_bytes() / 8;  // groups per chunk x 2 rows: 4 (MXFP4) or 8 (NVFP4)
  const int g = i / per_row, grp = (i % per_row) / 2, half = i % 2;
  const int crow = canonical_row(s, tile * kTileRows + g + 8 * half);
  const int group = chunk * (per_row / 2) + grp;
  if (group >= s.groups()) return s.group == 16 ? kPadScaleNvfp4 : kPadScale;
  const std::uint8_t b = scales[static_cast<std::int64_t>(crow) * s.groups() + group];
  return s.group == 16 ? nvfp4_scale_code(b) : b;
}

MXMOE_HD std::int64_t tiled_scale_offset(const TiledShape& s, int tile, int chunk, int i) {
  return (static_cast<std::int64_t>(tile) * s.chunks() + chunk) * s.chunk_scale_bytes() + i;
}

}  // namespace mxmoe::tiling
