// What a GEMM configuration (kernels/moe_gemm.hpp: GemmTiny ... GemmWgmma) and a weight format's
// scale group make of one CTA: threads, tiles, and the bytes of each shared-memory pipeline stage.
//   Geometry       the mma.sync kernel: [weights][scales][activation rows (16-bit or e4m3) padded
//                  for ldmatrix]
//   WgmmaGeometry  the wgmma kernel: [activations, 128-byte-swizzled slabs of kTokens rows x 128
//                  bytes (one per 64-K chunk of 16-bit values, one per two chunks of e4m3), the
//                  wgmma B operand][weights][scales], every stage 1024-byte aligned; its CTA adds a
//                  producer warpgroup, which copies (WgmmaProducerGeometry)
#pragma once

#include <type_traits>

#include "kernels/tile_layout.hpp"

namespace mxmoe::kernels::gemm {

// K slices (a configuration says kKSlices = S; 1 where it says nothing): the mma.sync kernel's warps
// form S groups over the same weight tiles, group s taking chunks s, s + S, ... of every stage, and
// add their sums through shared memory at the end in slice order (deterministic). S times the warps
// for the same shared memory: the decode loop waits mostly on fixed-latency dependencies, which more
// resident warps hide, and a CTA's K is no longer one warp's chain.
template <class Cfg, class = void>
struct KSlicesOf : std::integral_constant<int, 1> {};
template <class Cfg>
struct KSlicesOf<Cfg, std::void_t<decltype(Cfg::kKSlices)>> : std::integral_constant<int, Cfg::kKSlices> {};

// How many K-loop iterations the mma.sync kernel unrolls (a configuration says kKLoopUnroll; 1
// where it says nothing): the per-stage control and pointer steps spread over more MMAs, and a
// stage index that is a multiple of kStages apart becomes a constant. Static SASS per MMA (both the
// whole-stage and the tail paths): Tiny 34.5 -> 31.8 at 4, Decode 29.3 -> 26.6 at 2. With
// MinCtasPerSmOf below, 0.98-0.99x at 2-64 tokens on both presets, one token within +-1.2%
// (bench/results/20261202-1655-H200-decode-levers-ab).
template <class Cfg, class = void>
struct KLoopUnrollOf : std::integral_constant<int, 1> {};
template <class Cfg>
struct KLoopUnrollOf<Cfg, std::void_t<decltype(Cfg::kKLoopUnroll)>> : std::integral_constant<int, Cfg::kKLoopUnroll> {};

// The second argument of the mma.sync kernel's __launch_bounds__ (a configuration says
// kMinCtasPerSm; 0, as if absent, where it says nothing). Naming 1 lifts ptxas' own register target:
// Decode's K loop 469 -> 439 instructions at 53 -> 63 registers (five CTAs per SM either way, by
// shared memory). Alone 0.99x at 4-64 tokens, level at one and two
// (bench/results/20261202-1655-H200-decode-levers-ab).
template <class Cfg, class = void>
struct MinCtasPerSmOf : std::integral_constant<int, 0> {};
template <class Cfg>
struct MinCtasPerSmOf<Cfg, std::void_t<decltype(Cfg::kMinCtasPerSm)>> : std::integral_constant<int, Cfg::kMinCtasPerSm> {};

// The weight rows one CTA computes (plain C++: the plan counts CTAs with it).
template <class Cfg>
struct CtaTiles {
  static constexpr int kKSlices = KSlicesOf<Cfg>::value;
  static constexpr int kTileWarps = Cfg::kWarps / kKSlices;  // the warps of one K slice
  static constexpr int kTilesPerCta = kTileWarps * Cfg::kTilesPerWarp;
  static constexpr int kRowsPerCta = kTilesPerCta * tiling::kTileRows;
  static_assert(Cfg::kWarps % kKSlices == 0 && Cfg::kChunksPerStage % kKSlices == 0,
                "K slices split the warps and each stage's chunks evenly");
};

template <class Cfg, int kGroup>
struct WeightGeometry : CtaTiles<Cfg> {
  static constexpr int kThreads = Cfg::kWarps * 32;  // the threads that copy (the loaders' plans)
  static constexpr int kBlockThreads = kThreads;      // the CTA's threads
  using CtaTiles<Cfg>::kTilesPerCta;
  static constexpr int kStageK = Cfg::kChunksPerStage * tiling::kChunkK;
  static constexpr int kChunkScaleBytes = tiling::chunk_scale_bytes(kGroup);
  static constexpr int kWeightBytes = kTilesPerCta * Cfg::kChunksPerStage * tiling::kChunkBytes;
  static constexpr int kScaleBytes = kTilesPerCta * Cfg::kChunksPerStage * kChunkScaleBytes;
  static constexpr int kTokenTiles = Cfg::kTokens / 8;
  static_assert(Cfg::kTokens % 8 == 0, "tokens come in n8 tiles");
};

// kActElemBytes: 2 (bf16/fp16 activations) or 1 (e4m3, W4A8).
template <class Cfg, int kGroup, int kActElemBytes = 2>
struct Geometry : WeightGeometry<Cfg, kGroup> {
  using W = WeightGeometry<Cfg, kGroup>;
  static constexpr int kActElem = kActElemBytes;
  // Activation rows padded by 16 bytes so the eight rows of an ldmatrix hit distinct banks.
  static constexpr int kActRowBytes = W::kStageK * kActElemBytes + 16;
  static constexpr int kActBytes = Cfg::kTokens * kActRowBytes;
  static constexpr int kWeightOffset = 0, kScaleOffset = W::kWeightBytes, kActOffset = W::kWeightBytes + W::kScaleBytes;
  static constexpr int kStageBytes = kActOffset + kActBytes;
  static constexpr int kSmemBytes = Cfg::kStages * kStageBytes;
  static_assert(kStageBytes % 16 == 0, "stages must stay 16-byte aligned");
};

// kActElemBytes: 2 (bf16/fp16 activations) or 1 (e4m3, W4A8).
template <class Cfg, int kGroup, int kActElemBytes = 2>
struct WgmmaGeometry : WeightGeometry<Cfg, kGroup> {
  using W = WeightGeometry<Cfg, kGroup>;
  static constexpr int kWarpgroups = Cfg::kWarps / 4;
  static_assert(Cfg::kWarps % 4 == 0 && Cfg::kTilesPerWarp == 1, "a warpgroup is four warps, one 16-row tile each");
  static constexpr int kActElem = kActElemBytes;
  static constexpr int kSlabBytes = Cfg::kTokens * 128;  // kTokens rows x 128 bytes
  static constexpr int kSlabK = 128 / kActElemBytes;     // the K values of a slab row
  static constexpr int kSlabsPerStage = W::kStageK / kSlabK;
  static_assert(kSlabsPerStage * kSlabK == W::kStageK, "a stage is whole slabs");
  static constexpr int kActBytes = kSlabsPerStage * kSlabBytes;
  static constexpr int kActOffset = 0, kWeightOffset = kActBytes, kScaleOffset = kActBytes + W::kWeightBytes;
  static constexpr int kStageBytes = (kScaleOffset + W::kScaleBytes + 1023) / 1024 * 1024;
  static constexpr int kSmemBytes = Cfg::kStages * kStageBytes + 1024;  // + the base's alignment to 1024
  static_assert(Cfg::kTokens % 8 == 0 && Cfg::kTokens <= 256, "wgmma N is a multiple of 8 up to 256");
  // kWarps consumer warps (dequantisation, MMA) and one producer warpgroup that does every copy.
  static constexpr int kProducerThreads = 128;
  static constexpr int kBlockThreads = Cfg::kWarps * 32 + kProducerThreads;
};

// The wgmma kernel's stage layout as its producer warpgroup copies it.
template <class Cfg, int kGroup, int kActElemBytes = 2>
struct WgmmaProducerGeometry : WgmmaGeometry<Cfg, kGroup, kActElemBytes> {
  static constexpr int kThreads = WgmmaGeometry<Cfg, kGroup, kActElemBytes>::kProducerThreads;
};
// Each for a weight format (gemm/weight_formats.cuh), whose operand type gives the activation bytes.
template <class Cfg, class Format>
using GeometryOf = Geometry<Cfg, Format::kGroup, Format::Ops::kActBytes>;
template <class Cfg, class Format>
using WgmmaGeometryOf = WgmmaGeometry<Cfg, Format::kGroup, Format::Ops::kActBytes>;
template <class Cfg, class Format>
using WgmmaProducerGeometryOf = WgmmaProducerGeometry<Cfg, Format::kGroup, Format::Ops::kActBytes>;

}  // namespace mxmoe::kernels::gemm
