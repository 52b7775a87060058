// What a GEMM configuration (kernels/moe_gemm.hpp: GemmTiny ... GemmWgmma) and a weight format's
// scale group make of one CTA: threads, tiles, and the bytes of each shared-memory pipeline stage.
//   Geometry       the mma.sync kernel: [weights][scales][activation rows padded for ldmatrix]
//   WgmmaGeometry  the wgmma kernel: [activations, one 128-byte-swizzled slab per 64-K chunk, the
//                  wgmma B operand][weights][scales], every stage 1024-byte aligned; its CTA adds a
//                  producer warpgroup, which copies (WgmmaProducerGeometry)
#pragma once

#include "kernels/tile_layout.hpp"

namespace mxmoe::kernels::gemm {

template <class Cfg, int kGroup>
struct WeightGeometry {
  static constexpr int kThreads = Cfg::kWarps * 32;  // the threads that copy (the loaders' plans)
  static constexpr int kBlockThreads = kThreads;      // the CTA's threads
  static constexpr int kTilesPerCta = Cfg::kWarps * Cfg::kTilesPerWarp;
  static constexpr int kStageK = Cfg::kChunksPerStage * tiling::kChunkK;
  static constexpr int kChunkScaleBytes = tiling::chunk_scale_bytes(kGroup);
  static constexpr int kWeightBytes = kTilesPerCta * Cfg::kChunksPerStage * tiling::kChunkBytes;
  static constexpr int kScaleBytes = kTilesPerCta * Cfg::kChunksPerStage * kChunkScaleBytes;
  static constexpr int kTokenTiles = Cfg::kTokens / 8;
  static_assert(Cfg::kTokens % 8 == 0, "tokens come in n8 tiles");
};

template <class Cfg, int kGroup>
struct Geometry : WeightGeometry<Cfg, kGroup> {
  using W = WeightGeometry<Cfg, kGroup>;
  // Activation rows padded by 16 bytes so the eight rows of an ldmatrix hit distinct banks.
  static constexpr int kActRowBytes = W::kStageK * 2 + 16;
  static constexpr int kActBytes = Cfg::kTokens * kActRowBytes;
  static constexpr int kWeightOffset = 0, kScaleOffset = W::kWeightBytes, kActOffset = W::kWeightBytes + W::kScaleBytes;
  static constexpr int kStageBytes = kActOffset + kActBytes;
  static constexpr int kSmemBytes = Cfg::kStages * kStageBytes;
  static_assert(kStageBytes % 16 == 0, "stages must stay 16-byte aligned");
};

// kN: the N of the blocks the layout serves (16..kTokens). The CTA's shared memory is sized for
// Cfg::kStages stages of kTokens-row slabs; a block of fewer live pairs needs narrower slabs, so the
// same memory holds more of its stages (kStages): a deeper pipeline, more weight bytes in flight
// where the MMAs are short and the stream is what limits.
template <class Cfg, int kGroup, int kN = Cfg::kTokens>
struct WgmmaGeometry : WeightGeometry<Cfg, kGroup> {
  using W = WeightGeometry<Cfg, kGroup>;
  static constexpr int kWarpgroups = Cfg::kWarps / 4;
  static_assert(Cfg::kWarps % 4 == 0 && Cfg::kTilesPerWarp == 1, "a warpgroup is four warps, one 16-row tile each");
  static_assert(kN % 8 == 0 && kN <= Cfg::kTokens && Cfg::kTokens <= 256, "wgmma N is a multiple of 8 up to 256");
  static constexpr int stage_bytes(int rows) {  // rows x 64 16-bit values per chunk, then weights, scales
    return (Cfg::kChunksPerStage * rows * 128 + W::kWeightBytes + W::kScaleBytes + 1023) / 1024 * 1024;
  }
  static constexpr int kSlabBytes = kN * 128;  // one chunk: kN rows x 64 16-bit values
  static constexpr int kActBytes = Cfg::kChunksPerStage * kSlabBytes;
  static constexpr int kActOffset = 0, kWeightOffset = kActBytes, kScaleOffset = kActBytes + W::kWeightBytes;
  static constexpr int kStageBytes = stage_bytes(kN);
  static constexpr int kMaxStages = 12;  // the CTA's mbarrier pairs
  static constexpr int kStagesBytes = Cfg::kStages * stage_bytes(Cfg::kTokens);
  static constexpr int kStages = kStagesBytes / kStageBytes < kMaxStages ? kStagesBytes / kStageBytes : kMaxStages;
  static constexpr int kSmemBytes = kStagesBytes + 1024;  // + the base's alignment to 1024
  static_assert(kStages >= Cfg::kStages, "narrower blocks never get fewer stages");
  // kWarps consumer warps (dequantisation, MMA) and one producer warpgroup that does every copy.
  static constexpr int kProducerThreads = 128;
  static constexpr int kBlockThreads = Cfg::kWarps * 32 + kProducerThreads;
};

// The wgmma kernel's stage layout as its producer warpgroup copies it.
template <class Cfg, int kGroup, int kN = Cfg::kTokens>
struct WgmmaProducerGeometry : WgmmaGeometry<Cfg, kGroup, kN> {
  static constexpr int kThreads = WgmmaGeometry<Cfg, kGroup, kN>::kProducerThreads;
};

}  // namespace mxmoe::kernels::gemm
