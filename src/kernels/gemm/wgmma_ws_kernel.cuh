// EXPERIMENT (branch wip/wgmma-ws, not yet run on a GPU): the compute-bound kernel with a producer
// warpgroup. The consumer warpgroups (Cfg::kWarps / 4) dequantise and issue wgmma exactly as in
// wgmma_kernel.cuh, but never copy and never meet at a CTA-wide barrier: a fourth warpgroup issues
// every cp.async of a stage and arrives on the stage's "full" mbarrier when its copies land
// (cp.async.mbarrier.arrive.noinc, one arrival per producer thread); each consumer warp arrives on
// the stage's "empty" mbarrier once the wgmma group that read it has completed, and the producer
// waits for that before refilling the stage. setmaxnreg moves registers from the producer (copy
// addresses only) to the consumers (accumulators, two A register sets).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/block_pairs.cuh"
#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/mbarrier.cuh"
#include "kernels/gemm/stage_loader.cuh"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/gemm/wgmma_kernel.cuh"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// The stage layout of the wgmma kernel, copied by one warpgroup.
template <class Cfg, int kGroup>
struct ProducerGeometry : WgmmaGeometry<Cfg, kGroup> {
  static constexpr int kThreads = 128;
};

constexpr int kWsProducerRegs = 72, kWsConsumerRegs = 144;  // 3 x 128 x 144 + 128 x 72 <= 65536

template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void ws_produce(const MoeGemmParams& p, const WgmmaCta<Cfg::kTokens>& cta, std::uint64_t* full,
                                           std::uint64_t* empty, int ptid) {
  using PG = ProducerGeometry<Cfg, Format::kGroup>;
  constexpr int S = Cfg::kStages;
  const int n_chunks = p.shape.chunks();
  const int k_iters = (n_chunks + Cfg::kChunksPerStage - 1) / Cfg::kChunksPerStage;
  const WeightLoader<Cfg, PG> weights(p, p.weights + cta.expert * p.expert_weight_stride,
                                      p.scales + cta.expert * p.expert_scale_stride, cta.tile0, 0, n_chunks, ptid);
  const SwizzledActLoader<Cfg, PG, kN> acts(p, 0, p.shape.k, cta.pairs->act_row, ptid);
  const int first = k_iters < S ? k_iters : S;
  // The first round: weights first (independent of the previous kernel), then the wait, then the
  // activations; each stage's arrival covers every copy this thread issued before it.
  for (int s = 0; s < first; ++s) weights.load_weights(cta.smem, s, s, ptid);
  if constexpr (!Stage::kWaitAtStart) ptx::grid_dependency_wait();
  for (int s = 0; s < first; ++s) {
    acts.load_acts(cta.smem, s, s);
    ptx::cp_async_mbarrier_arrive(&full[s]);
  }
  for (int it = S; it < k_iters; ++it) {
    const int s = it % S;
    ptx::mbarrier_wait(&empty[s], static_cast<std::uint32_t>((it / S - 1) & 1));
    weights.load_weights(cta.smem, s, it, ptid);
    acts.load_acts(cta.smem, s, it);
    ptx::cp_async_mbarrier_arrive(&full[s]);
  }
  ptx::cp_async_wait_all();
}

template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void ws_consume(const MoeGemmParams& p, const WgmmaCta<Cfg::kTokens>& cta, std::uint64_t* full,
                                           std::uint64_t* empty) {
  using G = WgmmaGeometry<Cfg, Format::kGroup>;
  using Ops = typename Format::Ops;
  constexpr int kAcc = kN / 2;
  constexpr int S = Cfg::kStages;
  static_assert(Cfg::kChunksPerStage == 2, "one register set per chunk of a stage");
  const int tid = cta.tid, warp = tid / 32, lane = tid % 32;
  const int k_iters = (p.shape.chunks() + 1) / 2;

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    acc[i] = 0.0f;
    ptx::fence_operand(acc[i]);
  }
  std::uint32_t a[2][4][4];
  for (int kt = 0; kt < k_iters; ++kt) {
    const int s = kt % S;
    ptx::mbarrier_wait(&full[s], static_cast<std::uint32_t>((kt / S) & 1));
    ptx::fence_proxy_async_shared();  // the copies, seen through the barrier, to wgmma's proxy
    const std::uint8_t* stage = cta.smem + s * G::kStageBytes;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int at = warp * 2 + c;
      const uint4 wv = *reinterpret_cast<const uint4*>(stage + G::kWeightOffset + at * tiling::kChunkBytes + lane * 16);
      Format::dequant(wv, stage + G::kScaleOffset + at * G::kChunkScaleBytes, lane, a[c]);
      const std::uint64_t desc = ptx::smem_desc_k128_swizzled(ptx::smem_addr(stage + G::kActOffset + c * G::kSlabBytes));
      ptx::wgmma_fence();
#pragma unroll
      for (int k16 = 0; k16 < 4; ++k16) ptx::wgmma_m64k16<typename Ops::WgmmaType>(acc, a[c][k16], desc + 2 * k16);
      ptx::wgmma_commit();
      ptx::wgmma_wait<1>();
      if (c == 0 && kt > 0) {  // the previous stage's last group has completed: it may be refilled
        __syncwarp();
        if (lane == 0) ptx::mbarrier_arrive(&empty[(kt - 1) % S]);
      }
    }
  }
  ptx::wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < kAcc; ++i) ptx::fence_operand(acc[i]);

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
      epilogue.store(p, cta.pairs->pair[slot], cta.pairs->weight[slot], acc[4 * nt + j], acc[4 * nt + 2 + j]);
    }
}

template <class Cfg, class Format, class Stage>
__global__ void __launch_bounds__(Cfg::kWarps * 32 + 128, 1) moe_gemm_wgmma_ws_kernel(const MoeGemmParams p) {
  using G = WgmmaGeometry<Cfg, Format::kGroup>;
  constexpr int kConsumers = Cfg::kWarps * 32;
  static_assert(Cfg::kTokens == 128, "blocks run N = 64 or 128");
  const int block = blockIdx.y;
  if constexpr (!Stage::kWaitAtStart) ptx::allow_dependents_launch();  // the dependent waits for this grid anyway
  if (!begin_block<Stage>(p, block)) return;

  extern __shared__ __align__(16) std::uint8_t smem_raw[];
  __shared__ BlockPairs<Cfg::kTokens> pairs;
  __shared__ __align__(8) std::uint64_t full[Cfg::kStages], empty[Cfg::kStages];
  const int tid = threadIdx.x;
  if (tid == 0)
    for (int s = 0; s < Cfg::kStages; ++s) {
      ptx::mbarrier_init(&full[s], 128);           // one arrival per producer thread
      ptx::mbarrier_init(&empty[s], Cfg::kWarps);  // one per consumer warp
    }
  const int live_pairs = pairs.template load<Stage>(p, block, tid);  // its barrier publishes the inits too

  WgmmaCta<Cfg::kTokens> cta;
  cta.smem = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  cta.pairs = &pairs;
  cta.expert = p.block_expert[block];
  cta.tile0 = blockIdx.x * G::kTilesPerCta;
  cta.tid = tid;
  if (tid >= kConsumers) {
    ptx::setmaxnreg_dec<kWsProducerRegs>();
    if (live_pairs <= 64) ws_produce<64, Cfg, Format, Stage>(p, cta, full, empty, tid - kConsumers);
    else ws_produce<128, Cfg, Format, Stage>(p, cta, full, empty, tid - kConsumers);
  } else {
    ptx::setmaxnreg_inc<kWsConsumerRegs>();
    if (live_pairs <= 64) ws_consume<64, Cfg, Format, Stage>(p, cta, full, empty);
    else ws_consume<128, Cfg, Format, Stage>(p, cta, full, empty);
  }
}

}  // namespace mxmoe::kernels::gemm
