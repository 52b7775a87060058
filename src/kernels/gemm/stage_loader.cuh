// The copy side of the GEMM's pipeline: which 16-byte pieces of a stage each thread copies with
// cp.async. Each plan is fixed for the CTA's life (source pointers at k = 0 plus the per-stage
// advance), so the K loop does no index arithmetic.
//   TileWeightLoader   the stage's weight chunks and scales, few instructions (the mma.sync kernel)
//   WeightLoader       the same, few registers (the wgmma kernel's producer)
//   PaddedActLoader    the gathered activation rows (16-bit or e4m3), padded for ldmatrix (the
//                      mma.sync kernel)
//   SwizzledActLoader  the gathered activation rows as 128-byte-swizzled slabs (128 bytes of K per
//                      row: a 64-K chunk of 16-bit values, two of e4m3): the K-major B operand of
//                      wgmma (the wgmma kernel)
//   StageLoader        TileWeightLoader + PaddedActLoader
// Activations: padding slots and K past the end read as zeros (the padded weights are zero codes,
// but 0 x garbage could be NaN); rows of dead token tiles (act_row >= 0 only for live slots;
// live_tiles * 8 rows) are zeros too in the mma.sync kernel (a copy of 0 bytes: no predicate), and
// their product columns are discarded.
#pragma once

#include <cstdint>

#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// Scale piece i of a stage (16 bytes of one tile's scales for one chunk; a stage holds
// kChunksPerStage chunks of each of its tiles): which tile and chunk it belongs to, and where it
// comes from. A tile past N (tile >= n_tiles) reads tile 0's bytes, copied as zero bytes by the
// caller. Both weight loaders copy scales piece by piece this way.
template <class Cfg, class G>
struct ScalePiece {
  static constexpr int kPiecesPerChunk = G::kChunkScaleBytes / 16;
  int tile, chunk;  // tile: tile0 + the stage-local tile; chunk: within the stage
  const std::uint8_t* src;
  __device__ ScalePiece(int i, const std::uint8_t* s_expert, int tile0, int n_tiles, int n_chunks, int c_begin)
      : tile(tile0 + i / (Cfg::kChunksPerStage * kPiecesPerChunk)), chunk((i / kPiecesPerChunk) % Cfg::kChunksPerStage),
        src(s_expert + (static_cast<std::int64_t>(tile < n_tiles ? tile : 0) * n_chunks + c_begin + chunk) * G::kChunkScaleBytes +
            (i % kPiecesPerChunk) * 16) {}
};

template <class Cfg, class G>
struct TileWeightLoader {
  // The mma.sync kernel's plan (its K loop is issue-bound). The warps form kTileLanes x kChunkLanes
  // lanes: warp w copies, of tiles w % kTileLanes + t x kTileLanes, chunks w / kTileLanes + c x
  // kChunkLanes of the stage, thread tid its piece tid % 32 of each (more warps than tiles, as with K
  // slices, split the chunks). A warp copies whole 512-byte chunks (coalesced), and a thread's copies
  // of one tile are its first chunk's address plus compile-time steps, so a stage costs one 64-bit
  // add per tile and no bounds test when all its chunks lie inside the split (every stage but maybe
  // the last).
  // (The per-piece bounds test and address select made a third of the decode K loop's instructions
  // in the SASS, where the loop is issue-bound: bench/results/20261201-0347-H200-diagnose.)
  static constexpr int kCopyWarps = G::kThreads / 32;
  static constexpr int kTileLanes = kCopyWarps < G::kTilesPerCta ? kCopyWarps : G::kTilesPerCta;
  static constexpr int kChunkLanes = kCopyWarps / kTileLanes;
  static_assert(G::kTilesPerCta % kTileLanes == 0 && kCopyWarps % kTileLanes == 0, "tiles split evenly over the tile lanes");
  static_assert(Cfg::kChunksPerStage % kChunkLanes == 0, "a stage's chunks split evenly over the chunk lanes");
  static constexpr int kTilesPerThread = G::kTilesPerCta / kTileLanes;
  static constexpr int kChunksPerThread = Cfg::kChunksPerStage / kChunkLanes;
  static constexpr int kScalePieces = G::kScaleBytes / 16;
  static constexpr int kScalePerThread = (kScalePieces + G::kThreads - 1) / G::kThreads;
  static constexpr int kTileStageBytes = Cfg::kChunksPerStage * tiling::kChunkBytes;  // one tile's chunks in a stage

  const std::uint8_t* w_src[kTilesPerThread];  // the thread's piece of chunk c_begin of each of its tiles
  int w_bytes[kTilesPerThread];                // 16, or 0 for a tile past N (its pieces are written as zeros)
  int w_dst;                                   // the piece's offset in a stage's first chunk of the thread
  int w_chunk;                                 // the thread's first chunk within a stage (its chunk lane)
  const std::uint8_t* s_src[kScalePerThread];
  int s_chunk[kScalePerThread];                // chunk within the stage
  int s_bytes[kScalePerThread];                // 16, or 0 for a tile past N
  bool s_active[kScalePerThread];              // the thread has this scale piece (the last round may be partial)
  int s_dst;                                   // the thread's first scale piece in a stage
  int n_local;

  // Each tile's chunks are contiguous in global memory. A piece of a chunk past the end (n_local) or
  // of a tile past N is written as zeros (codes 0 and scale bytes 0: weights exactly 0), so a kernel
  // may run whole stages.
  __device__ TileWeightLoader(const MoeGemmParams& p, const std::uint8_t* w_expert, const std::uint8_t* s_expert, int tile0,
                              int c_begin, int n_local_, int tid)
      : w_chunk(kChunkLanes > 1 ? (tid / 32) / kTileLanes : 0), s_dst(tid * 16), n_local(n_local_) {
    const int n_tiles = p.shape.tiles(), n_chunks = p.shape.chunks();
    const int tile_lane = (tid / 32) % kTileLanes;
    w_dst = tile_lane * kTileStageBytes + w_chunk * tiling::kChunkBytes + (tid % 32) * 16;
#pragma unroll
    for (int t = 0; t < kTilesPerThread; ++t) {
      const int tile = tile0 + tile_lane + t * kTileLanes;
      w_bytes[t] = tile < n_tiles ? 16 : 0;
      w_src[t] = w_expert + (static_cast<std::int64_t>(tile < n_tiles ? tile : 0) * n_chunks + c_begin) * tiling::kChunkBytes + (tid % 32) * 16;
    }
#pragma unroll
    for (int j = 0; j < kScalePerThread; ++j) {
      const int i = tid + j * G::kThreads;
      const ScalePiece<Cfg, G> sp(i, s_expert, tile0, n_tiles, n_chunks, c_begin);
      s_chunk[j] = sp.chunk;
      s_bytes[j] = sp.tile < n_tiles ? 16 : 0;
      s_active[j] = i < kScalePieces;
      s_src[j] = sp.src;
    }
  }

  // Straight-line copies (predicated, no branches) on whole stages: each branch around a copy also
  // costs the compiler's padding before it.
  // smem: the stages' shared-space address (ptx::smem_addr, taken once per CTA).
  __device__ void load_weights(std::uint32_t smem, int stage, int k_iter) const {
    const std::uint32_t sw = smem + stage * G::kStageBytes + G::kWeightOffset + w_dst;
    const std::uint32_t ss = smem + stage * G::kStageBytes + G::kScaleOffset + s_dst;
    const int chunk0 = k_iter * Cfg::kChunksPerStage + w_chunk;  // the thread's first chunk of the stage
    const int stage0 = k_iter * Cfg::kChunksPerStage;
    if (stage0 + Cfg::kChunksPerStage <= n_local) {  // warp-uniform: every chunk of the stage is inside the split
#pragma unroll
      for (int t = 0; t < kTilesPerThread; ++t) {
        const std::uint8_t* src = w_src[t] + chunk0 * tiling::kChunkBytes;
#pragma unroll
        for (int c = 0; c < kChunksPerThread; ++c)
          ptx::cp_async16(sw + t * kTileLanes * kTileStageBytes + c * kChunkLanes * tiling::kChunkBytes,
                          src + c * kChunkLanes * tiling::kChunkBytes, w_bytes[t]);
      }
#pragma unroll
      for (int j = 0; j < kScalePerThread; ++j)
        ptx::cp_async16_if(s_active[j], ss + j * G::kThreads * 16, s_src[j] + stage0 * G::kChunkScaleBytes, s_bytes[j]);
      return;
    }
#pragma unroll
    for (int t = 0; t < kTilesPerThread; ++t)
#pragma unroll
      for (int c = 0; c < kChunksPerThread; ++c) {
        const int chunk = chunk0 + c * kChunkLanes;
        const bool ok = chunk < n_local;
        ptx::cp_async16(sw + t * kTileLanes * kTileStageBytes + c * kChunkLanes * tiling::kChunkBytes,
                        w_src[t] + (ok ? chunk * tiling::kChunkBytes : 0), ok ? w_bytes[t] : 0);
      }
#pragma unroll
    for (int j = 0; j < kScalePerThread; ++j) {
      const bool ok = stage0 + s_chunk[j] < n_local;
      ptx::cp_async16_if(s_active[j], ss + j * G::kThreads * 16, s_src[j] + (ok ? stage0 * G::kChunkScaleBytes : 0), ok ? s_bytes[j] : 0);
    }
  }
};

// The wgmma kernel's producer plan: consecutive threads copy consecutive 16-byte pieces of the stage,
// each piece with its own source pointer and a bounds test per copy. Its producer warpgroup holds the
// plan in 80 registers and is not issue-bound; TileWeightLoader's plan there made GemmWgmma's GEMM2
// spill (8-16 bytes with the Mxfp4Shifted and NVFP4 epilogues), so each kernel keeps its own.
template <class Cfg, class G>
struct WeightLoader {
  static constexpr int kWeightPieces = G::kWeightBytes / 16, kScalePieces = G::kScaleBytes / 16;
  static_assert(kWeightPieces % G::kThreads == 0, "weight pieces split evenly over threads");
  static constexpr int kWeightPerThread = kWeightPieces / G::kThreads;
  static constexpr int kScalePerThread = (kScalePieces + G::kThreads - 1) / G::kThreads;

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
      const ScalePiece<Cfg, G> sp(tid + j * G::kThreads, s_expert, tile0, n_tiles, n_chunks, c_begin);
      s_chunk[j] = sp.tile < n_tiles ? sp.chunk : (1 << 30);
      s_src[j] = sp.src;
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

  const std::uint8_t* a_src[kActPerThread];  // the piece at stage 0 (a padding slot's or a dead tile's: in row 0, never read)
  int a_k[kActPerThread];      // first K of the piece at stage 0
  int a_bytes[kActPerThread];  // 16 for a live slot, 0 for padding and dead tiles (written as zeros)
  int a_dst[kActPerThread];    // the piece's offset in a stage's activation rows
  const std::uint8_t* act;
  int K;

  __device__ PaddedActLoader(const MoeGemmParams& p, int c_begin, int K_, const std::int32_t* s_act_row, int live_tiles, int tid)
      : act(act_bytes<G::kActElem>(p)), K(K_) {
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      const int row = i / kPiecesPerRow, piece = i % kPiecesPerRow;
      const int src_row = s_act_row[row];
      a_k[j] = piece * kUnitK;
      a_bytes[j] = row < live_tiles * 8 && src_row >= 0 ? 16 : 0;
      a_dst[j] = row * G::kActRowBytes + piece * 16;
      a_src[j] = act + (static_cast<std::int64_t>(src_row >= 0 ? src_row : 0) * p.shape.k + c_begin * tiling::kChunkK + piece * kUnitK) * G::kActElem;
    }
  }

  // Every piece is copied, padding slots and dead token tiles as zeros (their sources lie in row 0
  // and read nothing), so the copies need no predicate; a stage whose K lies inside the problem
  // (every one but maybe the last) needs no bounds test either.
  __device__ void load_acts(std::uint32_t smem, int stage, int k_iter) const {  // smem: as load_weights'
    const std::uint32_t sx = smem + stage * G::kStageBytes + G::kActOffset;
    const int k0 = k_iter * G::kStageK;
    if (k0 + G::kStageK <= K) {  // warp-uniform
#pragma unroll
      for (int j = 0; j < kActPerThread; ++j) ptx::cp_async16(sx + a_dst[j], a_src[j] + k0 * G::kActElem, a_bytes[j]);
      return;
    }
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const bool valid = a_bytes[j] != 0 && k0 + a_k[j] < K;
      ptx::cp_async16(sx + a_dst[j], valid ? a_src[j] + k0 * G::kActElem : act, valid ? 16 : 0);
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
struct StageLoader : TileWeightLoader<Cfg, G>, PaddedActLoader<Cfg, G> {
  using TileWeightLoader<Cfg, G>::load_weights;
  __device__ StageLoader(const MoeGemmParams& p, const std::uint8_t* w_expert, const std::uint8_t* s_expert, int tile0, int c_begin,
                         int n_local, int K, const std::int32_t* s_act_row, int live_tiles, int tid)
      : TileWeightLoader<Cfg, G>(p, w_expert, s_expert, tile0, c_begin, n_local, tid),
        PaddedActLoader<Cfg, G>(p, c_begin, K, s_act_row, live_tiles, tid) {}
};

}  // namespace mxmoe::kernels::gemm
