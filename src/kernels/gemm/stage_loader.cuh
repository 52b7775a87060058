// The copy side of the GEMM's pipeline: which 16-byte pieces of a stage each thread copies with
// cp.async. Each plan is fixed for the CTA's life (source pointers at k = 0 plus the per-stage
// advance), so the K loop does no index arithmetic.
//   WeightLoader       the stage's weight chunks and scales (both kernels)
//   PaddedActLoader    the gathered activation rows (16-bit or e4m3), padded for ldmatrix (the
//                      mma.sync kernel)
//   SwizzledActLoader  the gathered activation rows as 128-byte-swizzled slabs (128 bytes of K per
//                      row: a 64-K chunk of 16-bit values, two of e4m3): the K-major B operand of
//                      wgmma (the wgmma kernel)
//   StageLoader        WeightLoader + PaddedActLoader
// Activations: padding slots and K past the end read as zeros (the padded weights are zero codes,
// but 0 x garbage could be NaN); rows of dead token tiles (act_row >= 0 only for live slots;
// live_tiles * 8 rows) are never copied, their product columns discarded.
#pragma once

#include <cstdint>

#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

template <class Cfg, class G>
struct WeightLoader {
  static constexpr int kWeightPieces = G::kWeightBytes / 16, kScalePieces = G::kScaleBytes / 16;
  static_assert(kWeightPieces % G::kThreads == 0, "weight pieces split evenly over threads");
  static constexpr int kWeightPerThread = kWeightPieces / G::kThreads;
  static constexpr int kScalePerThread = (kScalePieces + G::kThreads - 1) / G::kThreads;
  static constexpr int kScalePiecesPerChunk = G::kChunkScaleBytes / 16;

  const std::uint8_t* w_src[kWeightPerThread];
  int w_chunk[kWeightPerThread];  // chunk within the stage, or a huge value when the tile is past N
  const std::uint8_t* s_src[kScalePerThread];
  int s_chunk[kScalePerThread];
  int n_local;

  // Each tile's chunks are contiguous in global memory, so consecutive threads copy consecutive pieces.
  // A piece of a chunk past the end (n_local) or of a tile past N is written as zeros (codes 0 and
  // scale bytes 0: weights exactly 0), so the copy has no branches and a kernel may run whole stages.
  __device__ WeightLoader(const MoeGemmParams& p, const std::uint8_t* w_expert, const std::uint8_t* s_expert, int tile0,
                          int c_begin, int n_local_, int tid)
      : n_local(n_local_) {
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
      s_chunk[j] = tile < n_tiles ? c : (1 << 30);
      s_src[j] = s_expert + (static_cast<std::int64_t>(tile < n_tiles ? tile : 0) * n_chunks + c_begin + c) * G::kChunkScaleBytes + piece * 16;
    }
  }

  __device__ void load_weights(std::uint8_t* smem, int stage, int k_iter, int tid) const {
    std::uint8_t* sw = smem + stage * G::kStageBytes + G::kWeightOffset + tid * 16;
    std::uint8_t* ss = smem + stage * G::kStageBytes + G::kScaleOffset + tid * 16;
    const int chunk0 = k_iter * Cfg::kChunksPerStage;
#pragma unroll
    for (int j = 0; j < kWeightPerThread; ++j) {
      const bool ok = chunk0 + w_chunk[j] < n_local;
      ptx::cp_async16(sw + j * G::kThreads * 16, w_src[j] + (ok ? chunk0 * tiling::kChunkBytes : 0), ok ? 16 : 0);
    }
#pragma unroll
    for (int j = 0; j < kScalePerThread; ++j) {
      if (kScalePieces % G::kThreads != 0 && tid + j * G::kThreads >= kScalePieces) break;
      const bool ok = chunk0 + s_chunk[j] < n_local;
      ptx::cp_async16(ss + j * G::kThreads * 16, s_src[j] + (ok ? chunk0 * G::kChunkScaleBytes : 0), ok ? 16 : 0);
    }
  }
};

// The activation rows both loaders gather, as bytes: 16-bit values (MoeGemmParams::act, kActElem 2)
// or e4m3 (act_e4m3, kActElem 1), p.shape.k values per row.
template <int kActElem>
__device__ __forceinline__ const std::uint8_t* act_bytes(const MoeGemmParams& p) {
  if constexpr (kActElem == 1) return p.act_e4m3;
  else return reinterpret_cast<const std::uint8_t*>(p.act);
}

template <class Cfg, class G>
struct PaddedActLoader {
  static constexpr int kUnitK = 16 / G::kActElem;  // K values of a 16-byte piece (8 16-bit, 16 e4m3)
  static constexpr int kPiecesPerRow = G::kStageK / kUnitK, kActPieces = Cfg::kTokens * kPiecesPerRow;
  static_assert(kActPieces % G::kThreads == 0, "activation pieces split evenly over threads");
  static constexpr int kActPerThread = kActPieces / G::kThreads;

  const std::uint8_t* a_src[kActPerThread];
  int a_k[kActPerThread];  // first K of the piece at stage 0, -1 for a dead token tile, huge for padding
  const std::uint8_t* act;
  int K, tid;

  __device__ PaddedActLoader(const MoeGemmParams& p, int c_begin, int K_, const std::int32_t* s_act_row, int live_tiles, int tid_)
      : act(act_bytes<G::kActElem>(p)), K(K_), tid(tid_) {
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      const int row = i / kPiecesPerRow, piece = i % kPiecesPerRow;
      const int src_row = s_act_row[row];
      a_k[j] = row >= live_tiles * 8 ? -1 : src_row >= 0 ? piece * kUnitK : (1 << 30);
      a_src[j] = act + (static_cast<std::int64_t>(src_row >= 0 ? src_row : 0) * p.shape.k + c_begin * tiling::kChunkK + piece * kUnitK) * G::kActElem;
    }
  }

  __device__ void load_acts(std::uint8_t* smem, int stage, int k_iter) const {
    std::uint8_t* sx = smem + stage * G::kStageBytes + G::kActOffset;
    const int k0 = k_iter * G::kStageK;
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      if (a_k[j] < 0) continue;
      const bool valid = k0 + a_k[j] < K;
      ptx::cp_async16(sx + (i / kPiecesPerRow) * G::kActRowBytes + (i % kPiecesPerRow) * 16, valid ? a_src[j] + k0 * G::kActElem : act,
                      valid ? 16 : 0);
    }
  }
};

template <class Cfg, class G, int kRows = Cfg::kTokens>
struct SwizzledActLoader {
  // Thread tid copies 16-byte unit tid % 8 of every slab row tid / 8 + j * kRowStride below kRows
  // (the block's N; rows past it are never read): k kUnitK u .. kUnitK (u + 1) - 1 of the slab's K
  // (8 bf16/fp16 values, or 16 e4m3 ones). kRowStride is a multiple of 8, so all of a thread's rows
  // share one swizzle: one destination offset plus compile-time steps. Rows without a pair are
  // written as zeros, so the copy has no branches: a few instructions per 16 bytes (where kRowStride
  // does not divide kRows, the last row of some threads is a predicated-off copy).
  static constexpr int kRowStride = G::kThreads / 8;
  static_assert(kRowStride % 8 == 0, "one swizzle per thread");
  static constexpr int kRowsPerThread = (kRows + kRowStride - 1) / kRowStride;
  static constexpr bool kRagged = kRows % kRowStride != 0;
  static constexpr int kUnitK = 16 / G::kActElem;

  const std::uint8_t* a_src[kRowsPerThread];  // the row's bytes at k = k_unit of the first slab (the base for rows with no pair)
  unsigned live = 0;                          // bit j: row j has a pair
  bool last_in = true;                        // kRagged: this thread's last row is below kRows
  int dst, K, k_unit;

  __device__ SwizzledActLoader(const MoeGemmParams& p, int c_begin, int K_, const std::int32_t* s_act_row, int tid)
      : dst(ptx::swizzled_k128_offset(tid / 8, tid % 8)), K(K_), k_unit((tid % 8) * kUnitK) {
    if constexpr (kRagged) last_in = tid / 8 + (kRowsPerThread - 1) * kRowStride < kRows;
    const std::uint8_t* base = act_bytes<G::kActElem>(p);
#pragma unroll
    for (int j = 0; j < kRowsPerThread; ++j) {
      const int row = tid / 8 + j * kRowStride;
      const int src_row = row < kRows ? s_act_row[row] : -1;
      live |= (src_row >= 0 ? 1u : 0u) << j;
      a_src[j] = src_row >= 0 ? base + (static_cast<std::int64_t>(src_row) * p.shape.k + c_begin * tiling::kChunkK + k_unit) * G::kActElem
                              : base;
    }
  }

  __device__ void load_acts(std::uint8_t* smem, int stage, int k_iter) const {
    std::uint8_t* sx = smem + stage * G::kStageBytes + G::kActOffset + dst;
    const int k0 = k_iter * G::kStageK;
#pragma unroll
    for (int sl = 0; sl < G::kSlabsPerStage; ++sl) {
      const int k = k0 + sl * G::kSlabK;
      const bool in_k = k + k_unit < K;
#pragma unroll
      for (int j = 0; j < kRowsPerThread; ++j) {
        const bool valid = in_k && ((live >> j) & 1u);
        const std::uint8_t* src = a_src[j] + (valid ? k * G::kActElem : 0);
        if (kRagged && j == kRowsPerThread - 1)
          ptx::cp_async16_if(last_in, sx + sl * G::kSlabBytes + j * kRowStride * 128, src, valid ? 16 : 0);
        else
          ptx::cp_async16(sx + sl * G::kSlabBytes + j * kRowStride * 128, src, valid ? 16 : 0);
      }
    }
  }
};

// The mma.sync kernel's loader: weights and padded activation rows.
template <class Cfg, class G>
struct StageLoader : WeightLoader<Cfg, G>, PaddedActLoader<Cfg, G> {
  __device__ StageLoader(const MoeGemmParams& p, const std::uint8_t* w_expert, const std::uint8_t* s_expert, int tile0, int c_begin,
                         int n_local, int K, const std::int32_t* s_act_row, int live_tiles, int tid)
      : WeightLoader<Cfg, G>(p, w_expert, s_expert, tile0, c_begin, n_local, tid),
        PaddedActLoader<Cfg, G>(p, c_begin, K, s_act_row, live_tiles, tid) {}
  __device__ void load_weights(std::uint8_t* smem, int stage, int k_iter) const {
    WeightLoader<Cfg, G>::load_weights(smem, stage, k_iter, PaddedActLoader<Cfg, G>::tid);
  }
};

}  // namespace mxmoe::kernels::gemm
