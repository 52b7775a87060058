// The one-time GPU repack of canonical MXFP4 weights into the kernel's tile layout.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/tile_layout.hpp"

namespace mxmoe::tiling {

// `num_experts` consecutive canonical matrices (weights [N, K/2], scales [N, K/group] each) ->
// tiled weights and scales (TiledShape::weight_bytes()/scale_bytes() each), all on the device.
void launch_tile_matrices(const std::uint8_t* weights, const std::uint8_t* scales, const TiledShape& shape,
                          int num_experts, std::uint8_t* tiled_weights, std::uint8_t* tiled_scales, cudaStream_t stream);

// W4A8 (issue 14): the same canonical MXFP4 matrices -> the W4A8 tile layout (tile_layout_w4a8.hpp:
// prepared words, and per (row, group) table indices where MXFP4 has its scales) and each row's
// factor 2^base fp32 [num_experts, rows] in canonical row order (prepare/w4a8_row_base.hpp's rule);
// `bases` is scratch of num_experts x rows int32.
void launch_tile_matrices_w4a8(const std::uint8_t* weights, const std::uint8_t* scales, const TiledShape& shape, int num_experts,
                               std::int32_t* bases, std::uint8_t* tiled_weights, std::uint8_t* tiled_scales, float* row_factor,
                               cudaStream_t stream);

}  // namespace mxmoe::tiling
