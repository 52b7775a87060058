// The compute-bound GEMM kernel (sm_90a): E2M1 expert weights x 16-bit activations on warpgroup
// MMA, composed from the same pieces as the mma.sync kernel (kernel.cuh): a configuration with
// kWgmma (kernels/moe_gemm.hpp: GemmWgmma), a weight format (gemm/weight_formats.cuh) and a stage
// (gemm/epilogues.cuh).
//
// A CTA is kWarps / 4 warpgroups; warp w dequantises weight tile tile0 + w exactly as in the
// mma.sync kernel (its 16 lane bytes of a 64-K chunk are its A fragments for four k16 steps), and
// since wgmma's register A operand has mma.sync's fragment layout per warp, the four warps of a
// warpgroup feed one m64nNk16 whose N columns are routed pairs of one expert. The activations are
// the B operand, K-major in shared memory: one 128-byte-swizzled slab of kTokens rows x 64 K per
// chunk (gemm/stage_loader.cuh: SwizzledActLoader), read through a matrix descriptor.
//
// N follows the block: a block holds up to kTokens pairs, its expert's first; the CTA runs the main
// loop instantiated for N = 64 or 128 (256 with blocks of 256), the smallest that covers its live
// pairs, so an expert's last, partly filled block costs no more MMA than it needs.
//
// Pipeline: kStages shared-memory stages of kChunksPerStage chunks, filled by cp.async kStages - 2
// stages ahead. Per chunk a warpgroup dequantises into one of two register sets (the chunk's
// parity; the loop runs chunk pairs, and an odd chunk count gets one zero chunk), issues its four
// wgmma, commits them as a group, then waits for the previous group: so the dequantisation of
// chunk c + 1 runs while chunk c's MMAs do, a register set is rewritten only after the group that
// read it has completed, and the slot refilled at stage kt (last read at stage kt - 2) is free once
// every warp has passed stage kt - 1's waits and the barrier. No run-time branch may sit between
// wgmma groups (ptxas would serialise them: measured), hence the whole chunk pairs. cp.async writes
// shared memory through the generic proxy and wgmma reads it through the async proxy: each thread
// fences the proxies before the stage's barrier.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/block_pairs.cuh"
#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/stage_loader.cuh"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// What the CTA set up before its main loop.
template <int kTokens>
struct WgmmaCta {
  std::uint8_t* smem;  // 1024-byte aligned stages
  const BlockPairs<kTokens>* pairs;
  int expert, tile0, tid;
};

// The main loop and epilogue for blocks of at most kN live pairs.
template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void wgmma_block(const MoeGemmParams& p, const WgmmaCta<Cfg::kTokens>& cta) {
  using G = WgmmaGeometry<Cfg, Format::kGroup>;
  using Ops = typename Format::Ops;
  constexpr int kAcc = kN / 2;  // m64nN: N/2 fp32 per thread
  constexpr int kAhead = Cfg::kStages - 2;
  const int tid = cta.tid, warp = tid / 32, lane = tid % 32;
  const int n_chunks = p.shape.chunks();
  // Stages come in groups of kGroupStages holding two chunks (the register sets alternate by chunk
  // parity); zero chunks pad the count to whole groups.
  constexpr int kGroupStages = 2 / Cfg::kChunksPerStage;
  const int k_iters = (n_chunks + 1) / 2 * kGroupStages;

  const WeightLoader<Cfg, G> weights(p, p.weights + cta.expert * p.expert_weight_stride,
                                     p.scales + cta.expert * p.expert_scale_stride, cta.tile0, 0, n_chunks, tid);
  const SwizzledActLoader<Cfg, G, kN> acts(p, 0, p.shape.k, cta.pairs->act_row, tid);

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    acc[i] = 0.0f;
    ptx::fence_operand(acc[i]);
  }
  std::uint32_t a[2][4][4];

  // Prologue: weight stages first (independent of the previous kernel), then the wait, then the
  // activations of those stages as one more group; hence the full wait before the first stage.
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < k_iters) weights.load_weights(cta.smem, s, s, tid);
    ptx::cp_async_commit();
  }
  if constexpr (!Stage::kWaitAtStart) {
    ptx::grid_dependency_wait();
    ptx::allow_dependents_launch();
  }
#pragma unroll
  for (int s = 0; s < kAhead; ++s)
    if (s < k_iters) acts.load_acts(cta.smem, s, s);
  ptx::cp_async_commit();

  for (int kt0 = 0; kt0 < k_iters; kt0 += kGroupStages) {
#pragma unroll
    for (int gs = 0; gs < kGroupStages; ++gs) {
      const int kt = kt0 + gs;
      if (kt == 0) ptx::cp_async_wait<0>();
      else ptx::cp_async_wait<kAhead - 1>();
      ptx::fence_proxy_async_shared();
      __syncthreads();
      const int next = kt + kAhead;
      if (next < k_iters) {
        weights.load_weights(cta.smem, next % Cfg::kStages, next, tid);
        acts.load_acts(cta.smem, next % Cfg::kStages, next);
      }
      ptx::cp_async_commit();
      const std::uint8_t* stage = cta.smem + (kt % Cfg::kStages) * G::kStageBytes;
#pragma unroll
      for (int c = 0; c < Cfg::kChunksPerStage; ++c) {
        const int set = (gs * Cfg::kChunksPerStage + c) % 2;
        const int at = warp * Cfg::kChunksPerStage + c;  // this warp's tile, chunk c of the stage
        const uint4 wv = *reinterpret_cast<const uint4*>(stage + G::kWeightOffset + at * tiling::kChunkBytes + lane * 16);
        Format::dequant(wv, stage + G::kScaleOffset + at * G::kChunkScaleBytes, lane, a[set]);
        // k16 step s starts 32 bytes further: 2 in the descriptor's address field (no carry out of
        // it, the slab being 1024-byte aligned).
        const std::uint64_t desc = ptx::smem_desc_k128_swizzled(ptx::smem_addr(stage + G::kActOffset + c * G::kSlabBytes));
        ptx::wgmma_fence();
#pragma unroll
        for (int s = 0; s < 4; ++s) ptx::wgmma_m64k16<typename Ops::WgmmaType>(acc, a[set][s], desc + 2 * s);
        ptx::wgmma_commit();
        ptx::wgmma_wait<1>();
      }
    }
  }
  ptx::wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < kAcc; ++i) ptx::fence_operand(acc[i]);
  ptx::cp_async_wait<0>();

  const int tile = cta.tile0 + warp;
  if (tile >= p.shape.tiles()) return;
  const int g = lane / 4, t = lane % 4;
  const Stage epilogue(p, cta.expert, tile, g, 0);
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int slot = nt * 8 + 2 * t + j;
      if (cta.pairs->pair[slot] < 0) continue;
      // acc[4nt + j] and acc[4nt + 2 + j]: rows g and g+8 of the warp's tile.
      epilogue.store(p, cta.pairs->pair[slot], cta.pairs->weight[slot], acc[4 * nt + j], acc[4 * nt + 2 + j]);
    }
}

template <class Cfg, class Format, class Stage>
__global__ void __launch_bounds__(WgmmaGeometry<Cfg, Format::kGroup>::kThreads, 1) moe_gemm_wgmma_kernel(const MoeGemmParams p) {
  using G = WgmmaGeometry<Cfg, Format::kGroup>;
  static_assert(Cfg::kChunksPerStage == 1 || Cfg::kChunksPerStage == 2, "two chunks per stage group");
  static_assert(Cfg::kStages >= 3, "one stage in use, one whose MMAs may still run, one or more in flight");
  static_assert(Cfg::kTokens == 128 || Cfg::kTokens == 256, "blocks run N = 64, 128 (or 256)");
  const int block = blockIdx.y;
  if (!begin_block<Stage>(p, block)) return;

  extern __shared__ __align__(16) std::uint8_t smem_raw[];
  __shared__ BlockPairs<Cfg::kTokens> pairs;
  const int tid = threadIdx.x;
  static_assert(Cfg::kTokens <= G::kThreads, "one thread per token slot");
  const int live_pairs = pairs.template load<Stage>(p, block, tid);

  WgmmaCta<Cfg::kTokens> cta;
  // The swizzle acts on absolute address bits: align the stages to 1024 bytes (G reserves the slack).
  cta.smem = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  cta.pairs = &pairs;
  cta.expert = p.block_expert[block];
  cta.tile0 = blockIdx.x * G::kTilesPerCta;
  cta.tid = tid;
  if (live_pairs <= 64) wgmma_block<64, Cfg, Format, Stage>(p, cta);
  else if (Cfg::kTokens == 128 || live_pairs <= 128) wgmma_block<128, Cfg, Format, Stage>(p, cta);
  else wgmma_block<(Cfg::kTokens > 128 ? 256 : 128), Cfg, Format, Stage>(p, cta);
}

}  // namespace mxmoe::kernels::gemm
