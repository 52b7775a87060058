#include "prepare/prepare_cpu.hpp"

#include <cstring>

#include "mxmoe/error.hpp"

namespace mxmoe::tiling {
namespace {

void check_shape(const TiledShape& s) {
  if (s.f16 && s.group != 16)
    fail(ErrorCode::Shape, "tile layout: the fp16 placement is for NVFP4 (group 16) only");
  if (s.group != 32 && s.group != 16)
    fail(ErrorCode::Shape, "tile layout: the group must be 32 (MXFP4) or 16 (NVFP4), got " + std::to_string(s.group));
  if (s.rows <= 0 || s.rows % kTileRows || s.k <= 0 || s.k % s.group)
    fail(ErrorCode::Shape, "tile layout: rows must be a positive multiple of 16 and K of the group (" + std::to_string(s.group) +
                               "), got rows=" + std::to_string(s.rows) + " K=" + std::to_string(s.k));
  if (s.gate_up && (s.rows / 2) % 8)
    fail(ErrorCode::Shape, "tile layout: gate/up interleave needs I (rows/2) to be a multiple of 8, got " + std::to_string(s.rows / 2));
}

}  // namespace

TiledMatrix tile_matrix_cpu(const std::uint8_t* weights, const std::uint8_t* scales, const TiledShape& s) {
  check_shape(s);
  TiledMatrix out;
  out.weights.resize(static_cast<std::size_t>(s.weight_bytes()));
  out.scales.resize(static_cast<std::size_t>(s.scale_bytes()));
  for (int tile = 0; tile < s.tiles(); ++tile)
    for (int chunk = 0; chunk < s.chunks(); ++chunk) {
      for (int lane = 0; lane < 32; ++lane)
        for (int step = 0; step < 4; ++step) {
          const std::uint32_t w = tiled_word(weights, s, tile, chunk, lane, step, scales);
          std::memcpy(&out.weights[static_cast<std::size_t>(tiled_word_offset(s, tile, chunk, lane, step))], &w, 4);
        }
      for (int i = 0; i < s.chunk_scale_bytes(); ++i)
        out.scales[static_cast<std::size_t>(tiled_scale_offset(s, tile, chunk, i))] = tiled_scale(scales, s, tile, chunk, i);
    }
  return out;
}

void untile_matrix_cpu(const TiledMatrix& tiled, const TiledShape& s, std::uint8_t* weights, std::uint8_t* scales) {
  check_shape(s);
  const int I = s.rows / 2;
  auto canonical = [&](int prow) {
    if (!s.gate_up) return prow;
    const int tile = prow / 16, r = prow % 16;
    return r < 8 ? 8 * tile + r : I + 8 * tile + r - 8;
  };
  std::memset(weights, 0, static_cast<std::size_t>(s.rows) * (s.k / 2));
  for (int tile = 0; tile < s.tiles(); ++tile)
    for (int chunk = 0; chunk < s.chunks(); ++chunk)
      for (int lane = 0; lane < 32; ++lane)
        for (int step = 0; step < 4; ++step) {
          const std::size_t off = (static_cast<std::size_t>(tile) * s.chunks() + chunk) * 512 + lane * 16 + step * 4;
          std::uint32_t word;
          std::memcpy(&word, &tiled.weights[off], 4);
          for (int reg = 0; reg < 4; ++reg)
            for (int half = 0; half < 2; ++half) {
              // Register reg, half h holds A element (row g + 8*(reg&1), k 2t + 8*(reg>>1) + h),
              // its bits (m, e0, e1, sign) at the word positions the layout table gives (bf16: per
              // half; fp16: the same within each 16-bit half). Written out again rather than read
              // from place_element, so that the round trip checks the layout independently.
              static const int kBits[4][2][4] = {{{6, 7, 8, 15}, {22, 23, 24, 31}},
                                                 {{2, 3, 4, 11}, {18, 19, 20, 27}},
                                                 {{28, 29, 30, 5}, {12, 13, 14, 21}},
                                                 {{0, 1, 26, 9}, {16, 17, 10, 25}}};
              static const int kBitsF16[4][4] = {{9, 10, 11, 15}, {6, 7, 8, 12}, {3, 4, 5, 13}, {0, 1, 2, 14}};
              std::uint8_t nib = 0;
              for (int b = 0; b < 4; ++b) {
                const int at = s.f16 ? kBitsF16[reg][b] + 16 * half : kBits[reg][half][b];
                nib = static_cast<std::uint8_t>(nib | ((word >> at) & 1u) << b);
              }
              const int row = tile * 16 + lane / 4 + 8 * (reg & 1);
              const int k = chunk * 64 + step * 16 + 2 * (lane % 4) + 8 * (reg >> 1) + half;
              if (k >= s.k) continue;
              std::uint8_t& byte = weights[static_cast<std::size_t>(canonical(row)) * (s.k / 2) + k / 2];
              byte = static_cast<std::uint8_t>(byte | (k % 2 ? nib << 4 : nib));
            }
        }
  // Scale byte i of a chunk: row g + 8*half with g = i / (2 * groups per chunk), group (i / 2) %
  // (groups per chunk), half = i % 2 (written out again rather than through tiled_scale).
  const int groups_per_chunk = kChunkK / s.group, bytes_per_chunk = 16 * groups_per_chunk;
  for (int tile = 0; tile < s.tiles(); ++tile)
    for (int chunk = 0; chunk < s.chunks(); ++chunk)
      for (int i = 0; i < bytes_per_chunk; ++i) {
        const int row = tile * 16 + i / (2 * groups_per_chunk) + 8 * (i % 2);
        const int group = chunk * groups_per_chunk + (i / 2) % groups_per_chunk;
        if (group >= s.k / s.group) continue;
        const std::uint8_t b = tiled.scales[(static_cast<std::size_t>(tile) * s.chunks() + chunk) * bytes_per_chunk + i];
        scales[static_cast<std::size_t>(canonical(row)) * (s.k / s.group) + group] = s.group == 16 ? nvfp4_scale_from_code(b) : b;
      }
}

}  // namespace mxmoe::tiling
