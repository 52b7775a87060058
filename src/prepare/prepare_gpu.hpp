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

}  // namespace mxmoe::tiling
