// The CPU twin of the GPU prepare step, and its inverse (used to prove the layout is a permutation).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/tile_layout.hpp"

namespace mxmoe::tiling {

struct TiledMatrix {
  std::vector<std::uint8_t> weights;  // TiledShape::weight_bytes()
  std::vector<std::uint8_t> scales;   // TiledShape::scale_bytes()
};

// Canonical packed weights [N, K/2] and scales (E8M0 or UE4M3) [N, K/group] of one expert -> tile layout.
TiledMatrix tile_matrix_cpu(const std::uint8_t* weights, const std::uint8_t* scales, const TiledShape& shape);

// The inverse (NVFP4: blocks of scale 0 come back with zero codes, the codes prepare dropped),
// written from the bit positions rather than by calling tiled_word, so that a
// wrong mapping cannot cancel itself out: tile layout -> canonical [N, K/2] and [N, K/group].
void untile_matrix_cpu(const TiledMatrix& tiled, const TiledShape& shape, std::uint8_t* weights, std::uint8_t* scales);

}  // namespace mxmoe::tiling
