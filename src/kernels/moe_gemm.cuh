// The grouped W4A16 GEMM kernel: MXFP4 expert weights x bf16 activations on mma.sync tensor cores.
//
// Weights sit in the M slot of m16n8k16 (16 weight rows per tile) and routed tokens in the N slot,
// so a decode step with one token per expert wastes no weight bytes. Weights, scales and the gathered
// activation rows stream through a cp.async pipeline of kStages shared-memory buffers; each lane
// reads back its own 16 bytes of a 512-byte tile chunk (the tile layout makes them exactly its A
// fragments for four k16 steps), turns them into bf16 with integer operations and one exact bf16x2
// multiply by the E8M0 scale, and feeds the tensor cores. Activations reach the B fragments through
// ldmatrix. The epilogue is fused: GEMM1 applies the activation to its (gate, up) accumulator pair,
// GEMM2 adds the bias and applies the router weight.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/activation.hpp"
#include "formats/bf16.hpp"
#include "kernels/dequant.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels {

template <class Cfg>
struct GemmGeometry {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kTilesPerCta = Cfg::kWarps * Cfg::kTilesPerWarp;
  static constexpr int kStageK = Cfg::kChunksPerStage * tiling::kChunkK;
  static constexpr int kWeightBytes = kTilesPerCta * Cfg::kChunksPerStage * tiling::kChunkBytes;
  static constexpr int kScaleBytes = kTilesPerCta * Cfg::kChunksPerStage * tiling::kChunkScaleBytes;
  // Activation rows padded by 16 bytes so the eight rows of an ldmatrix hit distinct banks.
  static constexpr int kActRowBytes = kStageK * 2 + 16;
  static constexpr int kActBytes = Cfg::kTokens * kActRowBytes;
  static constexpr int kStageBytes = kWeightBytes + kScaleBytes + kActBytes;
  static constexpr int kSmemBytes = Cfg::kStages * kStageBytes;
  static constexpr int kTokenTiles = Cfg::kTokens / 8;
  static_assert(Cfg::kTokens % 8 == 0, "tokens come in n8 tiles");
  static_assert(kStageBytes % 16 == 0, "stages must stay 16-byte aligned");
};

template <class Cfg, bool kGateUp>
__global__ void __launch_bounds__(GemmGeometry<Cfg>::kThreads) moe_gemm_kernel(const MoeGemmParams p) {
  using G = GemmGeometry<Cfg>;
  const int block = blockIdx.y;
  // Dependencies: GEMM1 reads the block list the align kernel (its predecessor) writes. GEMM2's
  // predecessor is GEMM1, which lets it launch only after passing its own wait, so the block list
  // is complete and GEMM2 may read it, and stream its first weight stages, before waiting for the
  // intermediate activations.
  if constexpr (kGateUp) {
    ptx::grid_dependency_wait();
    ptx::allow_dependents_launch();
  }
  if (block >= *p.num_blocks) return;

  extern __shared__ __align__(16) std::uint8_t smem[];
  __shared__ std::int32_t s_pair[Cfg::kTokens];
  __shared__ std::int32_t s_act_row[Cfg::kTokens];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int expert = p.block_expert[block];
  const int n_tiles = p.shape.tiles(), n_chunks = p.shape.chunks();
  // Split K (blockIdx.z, GEMM2 of tiny batches only): this CTA takes chunks [c_begin, c_begin +
  // n_local) and works on them as a problem of its own with K = k_local.
  const int split = blockIdx.z, chunks_per_split = (n_chunks + gridDim.z - 1) / gridDim.z;
  const int c_begin = min(n_chunks, split * chunks_per_split);
  const int n_local = min(n_chunks, c_begin + chunks_per_split) - c_begin;
  const int K = max(0, min(p.shape.k - c_begin * tiling::kChunkK, n_local * tiling::kChunkK));
  const int tile0 = blockIdx.x * G::kTilesPerCta;
  const std::uint8_t* w_expert = p.weights + expert * p.expert_weight_stride;
  const std::uint8_t* s_expert = p.scales + expert * p.expert_scale_stride;

  static_assert(Cfg::kTokens <= G::kThreads, "one thread per token slot");
  int pair = -1;
  if (tid < Cfg::kTokens) {
    pair = p.sorted_pairs[block * Cfg::kTokens + tid];
    s_pair[tid] = pair;
    s_act_row[tid] = pair >= 0 ? pair / p.act_row_divisor : -1;
  }
  // A block holds its expert's pairs first and padding after, so only the first token tiles are
  // live: the rows of the others are not loaded. Their columns of the product are garbage and never
  // stored; an MMA column depends only on its own B column. (Skipping their MMAs too, with a
  // run-time break in the unrolled loop, measured slower: it serialises the ldmatrix/mma stream.)
  const int live_pairs = __syncthreads_count(pair >= 0);
  const int live_tiles = (live_pairs + 7) / 8;

  // Copy plan, fixed for the CTA's life: the 16-byte pieces of a stage this thread copies, as
  // source pointers at k = 0 plus the per-stage advance, so the K loop does no index arithmetic.
  // Weights: each tile's chunks are contiguous in global memory, so consecutive threads copy
  // consecutive pieces.
  constexpr int kWeightPieces = G::kWeightBytes / 16, kScalePieces = G::kScaleBytes / 16;
  constexpr int kPiecesPerRow = G::kStageK / 8, kActPieces = Cfg::kTokens * kPiecesPerRow;
  static_assert(kWeightPieces % G::kThreads == 0 && kActPieces % G::kThreads == 0, "pieces split evenly over threads");
  constexpr int kWeightPerThread = kWeightPieces / G::kThreads, kActPerThread = kActPieces / G::kThreads;
  constexpr int kScalePerThread = (kScalePieces + G::kThreads - 1) / G::kThreads;
  const std::uint8_t* w_src[kWeightPerThread];
  int w_chunk[kWeightPerThread];  // chunk within the stage, or a huge value when the tile is past N
#pragma unroll
  for (int j = 0; j < kWeightPerThread; ++j) {
    const int i = tid + j * G::kThreads;
    const int tl = i / (Cfg::kChunksPerStage * 32), c = (i / 32) % Cfg::kChunksPerStage, piece = i % 32;
    const int tile = tile0 + tl;
    w_chunk[j] = tile < n_tiles ? c : (1 << 30);
    w_src[j] = w_expert + (static_cast<std::int64_t>(tile < n_tiles ? tile : 0) * n_chunks + c_begin + c) * tiling::kChunkBytes + piece * 16;
  }
  const std::uint8_t* s_src[kScalePerThread];
  int s_chunk[kScalePerThread];
#pragma unroll
  for (int j = 0; j < kScalePerThread; ++j) {
    const int i = tid + j * G::kThreads;
    const int tl = i / (Cfg::kChunksPerStage * 2), c = (i / 2) % Cfg::kChunksPerStage, piece = i % 2;
    const int tile = tile0 + tl;
    const bool ok = i < kScalePieces && tile < n_tiles;
    s_chunk[j] = ok ? c : (1 << 30);
    s_src[j] = s_expert + (static_cast<std::int64_t>(ok ? tile : 0) * n_chunks + c_begin + c) * tiling::kChunkScaleBytes + piece * 16;
  }
  // Activations of the block's tokens; padding slots and K past the end read as zeros (the
  // padded weights are zero codes, but 0 x garbage could be NaN).
  const std::uint16_t* a_src[kActPerThread];
  int a_k[kActPerThread];  // first K of the piece at stage 0, or a huge value for a padding slot
#pragma unroll
  for (int j = 0; j < kActPerThread; ++j) {
    const int i = tid + j * G::kThreads;
    const int row = i / kPiecesPerRow, piece = i % kPiecesPerRow;
    const int src_row = s_act_row[row];
    // -1: a row of a dead token tile, whose product columns are discarded, so never copied.
    a_k[j] = row >= live_tiles * 8 ? -1 : src_row >= 0 ? piece * 8 : (1 << 30);
    a_src[j] = p.act + static_cast<std::int64_t>(src_row >= 0 ? src_row : 0) * p.shape.k + c_begin * tiling::kChunkK + piece * 8;
  }

  auto load_weights = [&](int stage, int k_iter) {
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
                        s_src[j] + static_cast<std::int64_t>(chunk0) * tiling::kChunkScaleBytes, 16);
  };
  auto load_acts = [&](int stage, int k_iter) {
    std::uint8_t* sx = smem + stage * G::kStageBytes + G::kWeightBytes + G::kScaleBytes;
    const int k0 = k_iter * G::kStageK;
#pragma unroll
    for (int j = 0; j < kActPerThread; ++j) {
      const int i = tid + j * G::kThreads;
      if (a_k[j] < 0) continue;
      const bool valid = k0 + a_k[j] < K;
      ptx::cp_async16(sx + (i / kPiecesPerRow) * G::kActRowBytes + (i % kPiecesPerRow) * 16, valid ? a_src[j] + k0 : p.act,
                      valid ? 16 : 0);
    }
  };

  float acc[Cfg::kTilesPerWarp][G::kTokenTiles][4] = {};
  const int k_iters = (n_local + Cfg::kChunksPerStage - 1) / Cfg::kChunksPerStage;

  // Prologue: weight stages first (independent of the previous kernel), then the wait, then the
  // activations of those stages as one more group; hence the full wait before the first stage.
#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s) {
    if (s < k_iters) load_weights(s, s);
    ptx::cp_async_commit();
  }
  if constexpr (!kGateUp) {
    ptx::grid_dependency_wait();
    ptx::allow_dependents_launch();
  }
#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s)
    if (s < k_iters) load_acts(s, s);
  ptx::cp_async_commit();

  for (int kt = 0; kt < k_iters; ++kt) {
    if (kt == 0) ptx::cp_async_wait<0>();
    else ptx::cp_async_wait<Cfg::kStages - 2>();
    __syncthreads();  // stage kt landed for everyone; stage kt-1 is no longer read by anyone
    {
      const int next = kt + Cfg::kStages - 1;
      if (next < k_iters) {
        load_weights(next % Cfg::kStages, next);
        load_acts(next % Cfg::kStages, next);
      }
      ptx::cp_async_commit();
    }
    const std::uint8_t* sw = smem + (kt % Cfg::kStages) * G::kStageBytes;
    const std::uint8_t* ss = sw + G::kWeightBytes;
    const std::uint8_t* sx = ss + G::kScaleBytes;
    const int chunk0 = kt * Cfg::kChunksPerStage;

#pragma unroll
    for (int c = 0; c < Cfg::kChunksPerStage; ++c) {
      if (chunk0 + c >= n_local) break;
      std::uint32_t a[Cfg::kTilesPerWarp][4][4];
#pragma unroll
      for (int mt = 0; mt < Cfg::kTilesPerWarp; ++mt) {
        const int tl = warp * Cfg::kTilesPerWarp + mt;
        const uint4 wv = *reinterpret_cast<const uint4*>(sw + (tl * Cfg::kChunksPerStage + c) * tiling::kChunkBytes + lane * 16);
        const std::uint32_t sc = *reinterpret_cast<const std::uint32_t*>(ss + (tl * Cfg::kChunksPerStage + c) * tiling::kChunkScaleBytes + (lane / 4) * 4);
        // Scale bytes: (row g, group 0), (row g+8, group 0), (row g, group 1), (row g+8, group 1).
        const std::uint32_t s_lo0 = e8m0_scale_pair_bits(sc & 0xffu), s_hi0 = e8m0_scale_pair_bits((sc >> 8) & 0xffu);
        const std::uint32_t s_lo1 = e8m0_scale_pair_bits((sc >> 16) & 0xffu), s_hi1 = e8m0_scale_pair_bits(sc >> 24);
        const std::uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const std::uint32_t s_lo = s < 2 ? s_lo0 : s_lo1, s_hi = s < 2 ? s_hi0 : s_hi1;
          a[mt][s][0] = ptx::mul_bf16x2(e2m1_pair_bits<0>(words[s]), s_lo);
          a[mt][s][1] = ptx::mul_bf16x2(e2m1_pair_bits<1>(words[s]), s_hi);
          a[mt][s][2] = ptx::mul_bf16x2(e2m1_pair_bits<2>(words[s]), s_lo);
          a[mt][s][3] = ptx::mul_bf16x2(e2m1_pair_bits<3>(words[s]), s_hi);
        }
      }
#pragma unroll
      for (int s2 = 0; s2 < 2; ++s2) {
#pragma unroll
        for (int nt = 0; nt < G::kTokenTiles; ++nt) {
          // Matrices: tokens nt*8..+7 x k (c*64 + s2*32) + {0, 8, 16, 24}..+7 -> b0b1, b2b3 of two k16 steps.
          std::uint32_t b[4];
          const int row = nt * 8 + (lane % 8);
          const int kcol = c * tiling::kChunkK + s2 * 32 + 8 * (lane / 8);
          ptx::ldmatrix_x4(b, sx + row * G::kActRowBytes + kcol * 2);
#pragma unroll
          for (int mt = 0; mt < Cfg::kTilesPerWarp; ++mt) {
            ptx::mma_bf16_16816(acc[mt][nt], a[mt][2 * s2], b[0], b[1]);
            ptx::mma_bf16_16816(acc[mt][nt], a[mt][2 * s2 + 1], b[2], b[3]);
          }
        }
      }
    }
  }
  ptx::cp_async_wait<0>();

  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < Cfg::kTilesPerWarp; ++mt) {
    const int tile = tile0 + warp * Cfg::kTilesPerWarp + mt;
    if (tile >= n_tiles) continue;
#pragma unroll
    for (int nt = 0; nt < G::kTokenTiles; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int pair = s_pair[nt * 8 + 2 * t + j];
        if (pair < 0) continue;
        const float lo = acc[mt][nt][j], hi = acc[mt][nt][2 + j];  // rows g and g+8 of the tile
        if constexpr (kGateUp) {
          const int inter = p.shape.rows / 2, feature = tile * 8 + g;
          float gate = lo, up = hi;
          if (p.bias) {
            gate += p.bias[static_cast<std::int64_t>(expert) * 2 * inter + feature];
            up += p.bias[static_cast<std::int64_t>(expert) * 2 * inter + inter + feature];
          }
          const float v = activate(p.act_kind, gate, up, p.act_limit, p.act_alpha);
          p.inter_out[static_cast<std::int64_t>(pair) * inter + feature] = formats::float_to_bf16(v);
        } else {
          const int hidden = p.shape.rows, row = tile * 16 + g;
          float y0 = lo, y1 = hi;
          if (p.bias && split == 0) {
            y0 += p.bias[static_cast<std::int64_t>(expert) * hidden + row];
            y1 += p.bias[static_cast<std::int64_t>(expert) * hidden + row + 8];
          }
          const float w = p.pair_weights[pair];
          float* out = p.partial_out + split * p.partial_split_stride + static_cast<std::int64_t>(pair) * hidden;
          out[row] = w * y0;
          out[row + 8] = w * y1;
        }
      }
  }
}

}  // namespace mxmoe::kernels
