// The copy side of the GEMM's pipeline: which 16-byte pieces of a stage (weights, scales, the
// gathered activation rows of the block's tokens) each thread copies with cp.async. The plan is
// fixed for the CTA's life: source pointers at k = 0 plus the per-stage advance, so the K loop
// does no index arithmetic.
#pragma once

#include <cstdint>

#include "kernels/gemm/geometry.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

template <class Cfg, class G>
struct StageLoader {
  static constexpr int kWeightPieces = G::kWeightBytes / 16, kScalePieces = G::kScaleBytes / 16;
  static constexpr int kPiecesPerRow = G::kStageK / 8, kActPieces = Cfg::kTokens * kPiecesPerRow;
  static_assert(kWeightPieces % G::kThreads == 0 && kActPieces % G::kThreads == 0, "pieces split evenly over threads");
  static constexpr int kWeightPerThread = kWeightPieces / G::kThreads, kActPerThread = kActPieces / G::kThreads;
  static constexpr int kScalePerThread = (kScalePieces + G::kThreads - 1) / G::kThreads;
  static constexpr int kScalePiecesPerChunk = G::kChunkScaleBytes / 16;

  const std::uint8_t* w_src[kWeightPerThread];
  int w_chunk[kWeightPerThread];  // chunk within the stage, or a huge value when the tile is past N
  const std::uint8_t* s_src[kScalePerThread];
  int s_chunk[kScalePerThread];
  const std::uint16_t* a_src[kActPerThread];
  int a_k[kActPerThread];  // first K of the piece at stage 0, -1 for a dead token tile, huge for padding
  const std::uint16_t* act;
  int n_local, K, tid;

  // Weights: each tile's chunks are contiguous in global memory, so consecutive threads copy
  // consecutive pieces. Activations: padding slots and K past the end read as zeros (the padded
  // weights are zero codes, but 0 x garbage could be NaN); rows of dead token tiles (act_row >= 0
  // only for live slots; live_tiles * 8 rows) are never copied, their product columns discarded.
  __device__ StageLoader(const MoeGemmParams& p, const std::uint8_t* w_expert, const std::uint8_t* s_expert, int tile0,
                         int c_begin, int n_local_, int K_, const std::int32_t* s_act_row, int live_tiles, int tid_)
      : act(p.act), n_local(n_local_), K(K_), tid(tid_) {
    const int n_tiles = p.shape.tiles(), n_chunks = p.shape.chunks();
#pragma unroll
    for (int j = 0; j < kWeightPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      const int tl = i / (Cfg::kChunksPerStage * 32), c = (i / 32) % Cfg::kChunksPerStage, piece = i % 32;
      const int tile = tile0 + tl;
      w_chunk[j] = tile < n_tiles ? c : (1 << 30);
      w_src[j] = w_expert + (static_cast<std::int64_t>(tile < n_tiles ? tile : 0) * n_chunks + c_begin + c) * tiling::kChunkBytes + piece * 16;
    }
#pragma unroll
    for (int j = 0; j < kScalePerThread; ++j) {
      const int i = tid + j * G::kThreads;
      const int tl = i / (Cfg::kChunksPerStage * kScalePiecesPerChunk), c = (i / kScalePiecesPerChunk) % Cfg::kChunksPerStage;
      const int piece = i % kScalePiecesPerChunk;
      const int tile = tile0 + tl;
      const bool ok = i < kScalePieces && tile < n_tiles;
      s_chunk[j] = ok ? c : (1 << 30);
      s_src[j] = s_expert + (static_cast<std::int64_t>(ok ? tile : 0) * n_chunks + c_begin + c) * G::kChunkScaleBytes + piece * 16;
    }
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      const int row = i / kPiecesPerRow, piece = i % kPiecesPerRow;
      const int src_row = s_act_row[row];
      a_k[j] = row >= live_tiles * 8 ? -1 : src_row >= 0 ? piece * 8 : (1 << 30);
      a_src[j] = p.act + static_cast<std::int64_t>(src_row >= 0 ? src_row : 0) * p.shape.k + c_begin * tiling::kChunkK + piece * 8;
    }
  }

  __device__ void load_weights(std::uint8_t* smem, int stage, int k_iter) const {
    std::uint8_t* sw = smem + stage * G::kStageBytes;
    const int chunk0 = k_iter * Cfg::kChunksPerStage;
#pragma unroll
    for (int j = 0; j < kWeightPerThread; ++j)
      if (chunk0 + w_chunk[j] < n_local)
        ptx::cp_async16(sw + (tid + j * G::kThreads) * 16, w_src[j] + static_cast<std::int64_t>(chunk0) * tiling::kChunkBytes, 16);
#pragma unroll
    for (int j = 0; j < kScalePerThread; ++j)
      if (chunk0 + s_chunk[j] < n_local)
        ptx::cp_async16(sw + G::kWeightBytes + (tid + j * G::kThreads) * 16,
                        s_src[j] + static_cast<std::int64_t>(chunk0) * G::kChunkScaleBytes, 16);
  }

  __device__ void load_acts(std::uint8_t* smem, int stage, int k_iter) const {
    std::uint8_t* sx = smem + stage * G::kStageBytes + G::kWeightBytes + G::kScaleBytes;
    const int k0 = k_iter * G::kStageK;
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      if (a_k[j] < 0) continue;
      const bool valid = k0 + a_k[j] < K;
      ptx::cp_async16(sx + (i / kPiecesPerRow) * G::kActRowBytes + (i % kPiecesPerRow) * 16, valid ? a_src[j] + k0 : act,
                      valid ? 16 : 0);
    }
  }
};

}  // namespace mxmoe::kernels::gemm
