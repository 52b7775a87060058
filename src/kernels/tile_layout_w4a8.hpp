// W4A8's tile layout (issue 14): the same 16-row x 64-K chunks of 512 bytes as the W4A16 layout
// (tile_layout.hpp: tiles, chunks, row order, zero padding past K), with each lane's 16 bytes ordered
// for FP8 warpgroup MMA instead of bf16.
//
// wgmma.m64nNk32 with e4m3 A in registers gives lane l (g = l/4, t = l%4) of each warp, per k32 step,
// four registers of four bytes: a0 (row g, k 4t..4t+3), a1 (row g+8, same k), a2 (row g, k
// 16+4t..16+4t+3), a3 (row g+8, same k) (the fragment of mma.m16n8k32 for 8-bit types). Those k do
// not map onto the bf16 layout's (2t, 2t+1, 2t+8, 2t+9 per k16) by whole 16-byte copies of the
// activations, so the weights take this order instead. Lane l's word w (w = 2 s2 + h) of a chunk is
// kernels/w4a8_regs.hpp's prepared word of register A = the codes of (row g + 8h, k 64c + 32 s2 + 4t
// + j) and register B = (row g + 8h, k 64c + 32 s2 + 16 + 4t + j), j = 0..3: one row and one 32-group,
// so one magnitude table serves the word.
//
// Scales: the MXFP4 chunk layout (32 bytes per tile and chunk, byte g*4 + grp*2 + half for row
// g + 8*half and group grp of the chunk), holding each (row, group)'s table index
// w4a8::table_index(s), s = (E8M0 byte - 127) - base[row] (prepare/w4a8_fold.hpp's rule; the
// epilogue multiplies the row by 2^base). Padding groups: the index of shift 0 (their codes are 0).
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"
#include "kernels/tile_layout.hpp"
#include "kernels/w4a8_regs.hpp"

namespace mxmoe::tiling::w4a8 {

// The E2M1 code of canonical (row, k), or 0 past K.
MXMOE_HD std::uint8_t canonical_code(const std::uint8_t* mat, const TiledShape& s, int crow, int k) {
  if (k >= s.k) return 0;
  return static_cast<std::uint8_t>((mat[static_cast<std::int64_t>(crow) * (s.k / 2) + k / 2] >> (4 * (k & 1))) & 15u);
}

// Word `w` (0..3) of `lane` in tile/chunk, from the canonical packed matrix [N, K/2].
MXMOE_HD std::uint32_t tiled_word(const std::uint8_t* mat, const TiledShape& s, int tile, int chunk, int lane, int w) {
  const int g = lane / 4, t = lane % 4, s2 = w / 2, h = w % 2;
  const int crow = canonical_row(s, tile * kTileRows + g + 8 * h);
  const int k0 = chunk * kChunkK + 32 * s2 + 4 * t;
  std::uint8_t a[4], b[4];
  for (int j = 0; j < 4; ++j) {
    a[j] = canonical_code(mat, s, crow, k0 + j);
    b[j] = canonical_code(mat, s, crow, k0 + 16 + j);
  }
  return kernels::w4a8::prepared_word(a, b);
}

// Scale byte `i` (0..31) of tile/chunk: the table index of its (row, group), from canonical E8M0
// scales [N, K/32] and the rows' bases (canonical order).
MXMOE_HD std::uint8_t tiled_table_index(const std::uint8_t* scales, const std::int32_t* base, const TiledShape& s, int tile,
                                        int chunk, int i) {
  const int g = i / 4, grp = (i % 4) / 2, half = i % 2;
  const int crow = canonical_row(s, tile * kTileRows + g + 8 * half);
  const int group = chunk * 2 + grp;
  if (group >= s.groups()) return static_cast<std::uint8_t>(kernels::w4a8::table_index(0));
  const int shift = (static_cast<int>(scales[static_cast<std::int64_t>(crow) * s.groups() + group]) - 127) - base[crow];
  return static_cast<std::uint8_t>(kernels::w4a8::table_index(shift));
}

}  // namespace mxmoe::tiling::w4a8
