// The grouped GEMM kernel on mma.sync tensor cores: E2M1 expert weights x 16-bit activations (W4A16),
// or x e4m3 activations with the weights converted to e4m3 (W4A8, the Mxfp4E4m3 format),
// composed from a configuration (tile sizes, kernels/moe_gemm.hpp), a weight format (how a lane's
// bytes become A fragments, gemm/weight_formats.cuh) and a stage (where the input comes from and
// what the epilogue does, gemm/epilogues.cuh).
//
// Weights sit in the M slot of m16n8k16 (16 weight rows per tile) and routed tokens in the N slot,
// so a decode step with one token per expert wastes no weight bytes. Weights, scales and the gathered
// activation rows stream through a cp.async pipeline of kStages shared-memory buffers
// (gemm/stage_loader.cuh); each lane reads back its own 16 bytes of a 512-byte tile chunk (the tile
// layout makes them exactly its A fragments for four k16 steps), dequantises them with integer
// operations and exact 16-bit multiplies, and feeds the tensor cores. Activations reach the B
// fragments through ldmatrix.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/block_pairs.cuh"
#include "kernels/gemm/epilogues.cuh"
#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/stage_loader.cuh"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// K slices (geometry.hpp): slices 1.. leave their sums (kAccs float4 per lane) in the stages' shared
// memory, no longer read by anyone, and slice 0 adds them in slice order (deterministic); returns
// whether this warp goes on to the epilogue (slice 0's warps).
template <class G, int kAccs>
__device__ __forceinline__ bool add_k_slices(std::uint8_t* smem, float* acc, int slice, int warp, int lane) {
  static_assert((G::kKSlices - 1) * G::kTileWarps * kAccs * 32 * 16 <= G::kSmemBytes, "the slices' sums fit the stages");
  float4* sums = reinterpret_cast<float4*>(smem);
  const auto at = [&](int s, int a) { return ((s - 1) * G::kTileWarps + warp) * kAccs * 32 + a * 32 + lane; };
  __syncthreads();  // every warp is past its last stage
  if (slice > 0) {
#pragma unroll
    for (int a = 0; a < kAccs; ++a) sums[at(slice, a)] = make_float4(acc[4 * a], acc[4 * a + 1], acc[4 * a + 2], acc[4 * a + 3]);
  }
  __syncthreads();
  if (slice > 0) return false;
#pragma unroll
  for (int s = 1; s < G::kKSlices; ++s)
#pragma unroll
    for (int a = 0; a < kAccs; ++a) {
      const float4 v = sums[at(s, a)];
      acc[4 * a] += v.x;
      acc[4 * a + 1] += v.y;
      acc[4 * a + 2] += v.z;
      acc[4 * a + 3] += v.w;
    }
  return true;
}

// The activation stage's address for ldmatrix: a shared-space offset (one register; a generic
// pointer re-derived the shared window in the loop) up to four token tiles; a generic pointer for
// wider blocks, whose shared-space addresses ptxas kept in registers per token tile (GemmPrefill's
// eight: 142 -> 184 registers, three CTAs per SM -> two).
template <class G>
__device__ __forceinline__ auto act_stage_address(std::uint8_t* smem, std::uint32_t smem_s, int offset) {
  if constexpr (G::kTokenTiles <= 4) return smem_s + offset;
  else return smem + offset;
}

template <class Cfg, class Format, class Stage>
__global__ void __launch_bounds__(GeometryOf<Cfg, Format>::kThreads, MinCtasPerSmOf<Cfg>::value) moe_gemm_kernel(const MoeGemmParams p) {
  using G = GeometryOf<Cfg, Format>;
  using Ops = typename Format::Ops;
  const int block = blockIdx.y;
  if (!begin_block<Stage, Cfg::kTokens>(p, block)) return;

  extern __shared__ __align__(16) std::uint8_t smem[];
  __shared__ BlockPairs<Cfg::kTokens> pairs;

  const int tid = threadIdx.x, lane = tid % 32;
  // The warp's K slice and its place among the slice's warps (geometry.hpp: CtaTiles).
  const int slice = G::kKSlices > 1 ? (tid / 32) / G::kTileWarps : 0, warp = (tid / 32) % G::kTileWarps;
  const int expert = block_expert(p, block);
  const int n_tiles = p.shape.tiles(), n_chunks = p.shape.chunks();
  // Split K (blockIdx.z, GEMM2 of tiny batches only): this CTA takes chunks [c_begin, c_begin +
  // n_local) and works on them as a problem of its own with K = k_local.
  const int split = Stage::kSplitK ? static_cast<int>(blockIdx.z) : 0;
  const int n_splits = Stage::kSplitK ? static_cast<int>(gridDim.z) : 1;
  const int chunks_per_split = (n_chunks + n_splits - 1) / n_splits;
  const int c_begin = min(n_chunks, split * chunks_per_split);
  const int n_local = min(n_chunks, c_begin + chunks_per_split) - c_begin;
  const int K = max(0, min(p.shape.k - c_begin * tiling::kChunkK, n_local * tiling::kChunkK));
  const int tile0 = blockIdx.x * G::kTilesPerCta;

  static_assert(Cfg::kTokens <= G::kThreads && kDirectMaxPairs <= G::kThreads, "one thread per token slot and per direct id");
  // A block holds its expert's pairs first and padding after, so only the first token tiles are
  // live: the rows of the others are written as zeros (copies of 0 bytes). Their columns are never
  // stored; an MMA column depends only on its own B column. (Skipping their MMAs too, with a
  // run-time break in the unrolled loop, measured slower: it serialises the ldmatrix/mma stream.)
  Format::init_shared(tid);  // before the first barrier (in load)
  const int live_pairs = pairs.template load<Stage>(p, block, tid);
  const int live_tiles = (live_pairs + 7) / 8;

  const StageLoader<Cfg, G> loader(p, p.weights + expert * p.expert_weight_stride, p.scales + expert * p.expert_scale_stride,
                                   tile0, c_begin, n_local, K, pairs.act_row, live_tiles, tid);

  const std::uint32_t smem_s = ptx::smem_addr(smem);  // the stages as shared-space addresses (cp.async, ldmatrix)

  float acc[Cfg::kTilesPerWarp][G::kTokenTiles][4] = {};
  const int k_iters = (n_local + Cfg::kChunksPerStage - 1) / Cfg::kChunksPerStage;

  // Prologue: weight stages first (independent of the previous kernel), then the wait, then the
  // activations of those stages as one more group; hence the full wait before the first stage.
#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s) {
    if (s < k_iters) loader.load_weights(smem_s, s, s);
    ptx::cp_async_commit();
  }
  if constexpr (!Stage::kWaitAtStart) {
    ptx::grid_dependency_wait();
    ptx::allow_dependents_launch();
  }
#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s)
    if (s < k_iters) loader.load_acts(smem_s, s, s);
  ptx::cp_async_commit();

#pragma unroll(KLoopUnrollOf<Cfg>::value)
  for (int kt = 0; kt < k_iters; ++kt) {
    if (kt == 0) ptx::cp_async_wait<0>();
    else ptx::cp_async_wait<Cfg::kStages - 2>();
    __syncthreads();  // stage kt landed for everyone; stage kt-1 is no longer read by anyone
    {
      const int next = kt + Cfg::kStages - 1;
      if (next < k_iters) {
        loader.load_weights(smem_s, next % Cfg::kStages, next);
        loader.load_acts(smem_s, next % Cfg::kStages, next);
      }
      ptx::cp_async_commit();
    }
    const std::uint8_t* sw = smem + (kt % Cfg::kStages) * G::kStageBytes + G::kWeightOffset;
    const std::uint8_t* ss = smem + (kt % Cfg::kStages) * G::kStageBytes + G::kScaleOffset;
    const auto sx = act_stage_address<G>(smem, smem_s, (kt % Cfg::kStages) * G::kStageBytes + G::kActOffset);
    const int chunk0 = kt * Cfg::kChunksPerStage;

#pragma unroll
    for (int i = 0; i < Cfg::kChunksPerStage / G::kKSlices; ++i) {
      const int c = slice + i * G::kKSlices;  // the slice's chunks of the stage
      if (chunk0 + c >= n_local) break;
      std::uint32_t a[Cfg::kTilesPerWarp][4][4];
#pragma unroll
      for (int mt = 0; mt < Cfg::kTilesPerWarp; ++mt) {
        const int tl = warp * Cfg::kTilesPerWarp + mt;
        const uint4 wv = *reinterpret_cast<const uint4*>(sw + (tl * Cfg::kChunksPerStage + c) * tiling::kChunkBytes + lane * 16);
        Format::dequant(wv, ss + (tl * Cfg::kChunksPerStage + c) * G::kChunkScaleBytes, lane, a[mt]);
      }
      // One ldmatrix.x4 per 64 bytes of the chunk's activations (two for 16-bit values, one for e4m3)
      // gives the B fragments of two MMA steps (k16 or k32): b0 b1 of the first, b2 b3 of the second.
#pragma unroll
      for (int s2 = 0; s2 < G::kActElem; ++s2) {
#pragma unroll
        for (int nt = 0; nt < G::kTokenTiles; ++nt) {
          // Matrices: tokens nt*8..+7 x bytes (c*64 + s2*32) x elem + {0, 16, 32, 48}..+15.
          std::uint32_t b[4];
          const int row = nt * 8 + (lane % 8);
          const int kbyte = c * tiling::kChunkK * G::kActElem + s2 * 64 + 16 * (lane / 8);
          ptx::ldmatrix_x4(b, sx + row * G::kActRowBytes + kbyte);
#pragma unroll
          for (int mt = 0; mt < Cfg::kTilesPerWarp; ++mt) {
            Ops::mma(acc[mt][nt], a[mt][2 * s2], b[0], b[1]);
            Ops::mma(acc[mt][nt], a[mt][2 * s2 + 1], b[2], b[3]);
          }
        }
      }
    }
  }
  // Keep what follows the K loop small: ptxas treats the loop by the whole kernel, and a fused
  // combine's tail here once made every decode loop 9-20% longer and as much slower
  // (bench/results/20261202-1500-H200-fused-combine-ab). ctest kloop_budget checks the counts.
  ptx::cp_async_wait<0>();
  if constexpr (G::kKSlices > 1) {
    if (!add_k_slices<G, Cfg::kTilesPerWarp * G::kTokenTiles>(smem, &acc[0][0][0], slice, warp, lane)) return;
  }

  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < Cfg::kTilesPerWarp; ++mt) {
    const int tile = tile0 + warp * Cfg::kTilesPerWarp + mt;
    if (tile >= n_tiles) continue;
    const Stage epilogue(p, expert, tile, g, split);
#pragma unroll
    for (int nt = 0; nt < G::kTokenTiles; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int slot = nt * 8 + 2 * t + j;
        if (pairs.pair[slot] < 0) continue;
        // acc[..][j] and acc[..][2 + j]: rows g and g+8 of the tile.
        store_pair<Format>(p, epilogue, pairs.pair[slot], act_scale_of<Format>(p, pairs.act_row[slot]), pairs.weight[slot], acc[mt][nt][j], acc[mt][nt][2 + j]);
      }
  }
}

}  // namespace mxmoe::kernels::gemm
