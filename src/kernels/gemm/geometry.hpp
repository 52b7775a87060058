// What a GEMM configuration (kernels/moe_gemm.hpp: GemmTiny ... GemmPrefill) and a weight format's
// scale group make of one CTA: threads, tiles, and the bytes of each shared-memory pipeline stage.
#pragma once

#include "kernels/tile_layout.hpp"

namespace mxmoe::kernels::gemm {

template <class Cfg, int kGroup>
struct Geometry {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kTilesPerCta = Cfg::kWarps * Cfg::kTilesPerWarp;
  static constexpr int kStageK = Cfg::kChunksPerStage * tiling::kChunkK;
  static constexpr int kChunkScaleBytes = tiling::chunk_scale_bytes(kGroup);
  static constexpr int kWeightBytes = kTilesPerCta * Cfg::kChunksPerStage * tiling::kChunkBytes;
  static constexpr int kScaleBytes = kTilesPerCta * Cfg::kChunksPerStage * kChunkScaleBytes;
  // Activation rows padded by 16 bytes so the eight rows of an ldmatrix hit distinct banks.
  static constexpr int kActRowBytes = kStageK * 2 + 16;
  static constexpr int kActBytes = Cfg::kTokens * kActRowBytes;
  static constexpr int kStageBytes = kWeightBytes + kScaleBytes + kActBytes;
  static constexpr int kSmemBytes = Cfg::kStages * kStageBytes;
  static constexpr int kTokenTiles = Cfg::kTokens / 8;
  static_assert(Cfg::kTokens % 8 == 0, "tokens come in n8 tiles");
  static_assert(kStageBytes % 16 == 0, "stages must stay 16-byte aligned");
};

}  // namespace mxmoe::kernels::gemm
