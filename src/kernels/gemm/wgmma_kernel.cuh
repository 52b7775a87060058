// The compute-bound GEMM kernel (sm_90a): E2M1 expert weights x 16-bit activations on warpgroup
// MMA, composed from the same pieces as the mma.sync kernel (kernel.cuh): a configuration with
// kWgmma (kernels/moe_gemm.hpp: GemmWgmma), a weight format (gemm/weight_formats.cuh) and a stage
// (gemm/epilogues.cuh).
//
// Roles (warp specialisation, the producer/consumer form of CUTLASS's sm90 mainloops): the CTA is
// Cfg::kWarps / 4 consumer warpgroups and one producer warpgroup.
// - The producer issues every cp.async of a stage (weights, scales, the block's gathered activation
//   rows) and arrives on the stage's "full" mbarrier when its copies land
//   (cp.async.mbarrier.arrive.noinc: one arrival per producer thread). Before refilling a stage it
//   waits on the stage's "empty" mbarrier.
// - Consumer warp w dequantises weight tile tile0 + w exactly as the mma.sync kernel does (its 16
//   lane bytes of a 64-K chunk are its A fragments for four k16 steps); wgmma's register A operand
//   has mma.sync's fragment layout per warp, so the four warps of a warpgroup feed one m64nNk16
//   whose N columns are routed pairs of one expert. The activations are the B operand, K-major in
//   shared memory: one 128-byte-swizzled slab of rows x 64 K per chunk (stage_loader.cuh:
//   SwizzledActLoader), read through a matrix descriptor. Once the wgmma group that read a stage has
//   completed, each consumer warp arrives on its "empty" barrier.
// - setmaxnreg moves registers from the producer (copy addresses only) to the consumers
//   (accumulators, two A register sets). No CTA-wide barrier sits in the K loop.
// Measured on an H200 against the previous form (every warp copying, a CTA barrier per stage;
// bench/results/20261130-1450-H200-wgmma-ws): 7% faster at 1024 tokens, 2-4% at 4096, 1% at 16384.
//
// N follows the block: a block holds up to kTokens (128) pairs of one expert; the CTA runs the main
// loop instantiated for N = 16, 32, 64 or 128, the smallest that covers its live pairs, so a block
// of an expert with few pairs costs no more MMA (nor activation copies) than it needs.
//
// Pipeline per consumer warpgroup: each stage holds two chunks, one per A register set; per chunk
// it dequantises, issues four wgmma, commits them as a group, then waits for the previous group, so
// chunk c + 1's dequantisation runs while chunk c's MMAs do and a register set is rewritten only
// after the group that read it has completed. No run-time branch may sit between wgmma groups
// (ptxas would serialise them: measured). cp.async writes shared memory through the generic proxy
// and wgmma reads it through the async proxy: consumers fence the proxies after the full barrier.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/block_pairs.cuh"
#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/mbarrier.cuh"
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
  std::uint64_t* full;   // [kStages]: the producer's copies of the stage have landed
  std::uint64_t* empty;  // [kStages]: every consumer warp is done reading the stage
  int expert, tile0, tid;
};

constexpr int kWgmmaProducerRegs = 72, kWgmmaConsumerRegs = 144;  // 3 x 128 x 144 + 128 x 72 <= 65536

// The producer warpgroup: every copy of every stage. ptid: 0..127.
template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void wgmma_produce(const MoeGemmParams& p, const WgmmaCta<Cfg::kTokens>& cta, int ptid) {
  using PG = WgmmaProducerGeometry<Cfg, Format::kGroup>;
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
    ptx::cp_async_mbarrier_arrive(&cta.full[s]);
  }
  for (int it = S; it < k_iters; ++it) {
    const int s = it % S;
    ptx::mbarrier_wait(&cta.empty[s], static_cast<std::uint32_t>((it / S - 1) & 1));
    weights.load_weights(cta.smem, s, it, ptid);
    acts.load_acts(cta.smem, s, it);
    ptx::cp_async_mbarrier_arrive(&cta.full[s]);
  }
  ptx::cp_async_wait_all();
}

// A consumer warpgroup: dequantisation, wgmma, then the stage's epilogue per 16-row tile.
template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void wgmma_consume(const MoeGemmParams& p, const WgmmaCta<Cfg::kTokens>& cta) {
  using G = WgmmaGeometry<Cfg, Format::kGroup>;
  using Ops = typename Format::Ops;
  constexpr int kAcc = kN / 2;  // m64nN: N/2 fp32 per thread
  constexpr int S = Cfg::kStages;
  const int tid = cta.tid, warp = tid / 32, lane = tid % 32;
  const int k_iters = (p.shape.chunks() + 1) / 2;  // a stage past the last chunk is zero codes

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    acc[i] = 0.0f;
    ptx::fence_operand(acc[i]);
  }
  std::uint32_t a[2][4][4];
  for (int kt = 0; kt < k_iters; ++kt) {
    const int s = kt % S;
    ptx::mbarrier_wait(&cta.full[s], static_cast<std::uint32_t>((kt / S) & 1));
    ptx::fence_proxy_async_shared();  // the copies, seen through the barrier, to wgmma's proxy
    const std::uint8_t* stage = cta.smem + s * G::kStageBytes;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int at = warp * 2 + c;  // this warp's tile, chunk c of the stage
      const uint4 wv = *reinterpret_cast<const uint4*>(stage + G::kWeightOffset + at * tiling::kChunkBytes + lane * 16);
      Format::dequant(wv, stage + G::kScaleOffset + at * G::kChunkScaleBytes, lane, a[c]);
      // k16 step s starts 32 bytes further: 2 in the descriptor's address field (no carry out of
      // it, the slab being 1024-byte aligned).
      const std::uint64_t desc = ptx::smem_desc_k128_swizzled(ptx::smem_addr(stage + G::kActOffset + c * G::kSlabBytes));
      ptx::wgmma_fence();
#pragma unroll
      for (int k16 = 0; k16 < 4; ++k16) ptx::wgmma_m64k16<typename Ops::WgmmaType>(acc, a[c][k16], desc + 2 * k16);
      ptx::wgmma_commit();
      ptx::wgmma_wait<1>();
      if (c == 0 && kt > 0) {  // the previous stage's last group has completed: it may be refilled
        __syncwarp();
        if (lane == 0) ptx::mbarrier_arrive(&cta.empty[(kt - 1) % S]);
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
      // acc[4nt + j] and acc[4nt + 2 + j]: rows g and g+8 of the warp's tile.
      epilogue.store(p, cta.pairs->pair[slot], cta.pairs->weight[slot], acc[4 * nt + j], acc[4 * nt + 2 + j]);
    }
}

// One role's work for blocks of at most kN live pairs.
template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void wgmma_role(const MoeGemmParams& p, const WgmmaCta<Cfg::kTokens>& cta, bool producer) {
  if (producer) wgmma_produce<kN, Cfg, Format, Stage>(p, cta, cta.tid - Cfg::kWarps * 32);
  else wgmma_consume<kN, Cfg, Format, Stage>(p, cta);
}

template <class Cfg, class Format, class Stage>
__global__ void __launch_bounds__(WgmmaGeometry<Cfg, Format::kGroup>::kBlockThreads, 1) moe_gemm_wgmma_kernel(const MoeGemmParams p) {
  using G = WgmmaGeometry<Cfg, Format::kGroup>;
  static_assert(Cfg::kTokens == 128, "blocks run N = 16, 32, 64 or 128");
  static_assert(Cfg::kChunksPerStage == 2, "one A register set per chunk of a stage");
  const int block = blockIdx.y;
  if constexpr (!Stage::kWaitAtStart) ptx::allow_dependents_launch();  // the dependent waits for this grid anyway
  if (!begin_block<Stage>(p, block)) return;

  extern __shared__ __align__(16) std::uint8_t smem_raw[];
  __shared__ BlockPairs<Cfg::kTokens> pairs;
  __shared__ __align__(8) std::uint64_t full[Cfg::kStages], empty[Cfg::kStages];
  const int tid = threadIdx.x;
  if (tid == 0)
    for (int s = 0; s < Cfg::kStages; ++s) {
      ptx::mbarrier_init(&full[s], G::kProducerThreads);  // one arrival per producer thread
      ptx::mbarrier_init(&empty[s], Cfg::kWarps);         // one per consumer warp
    }
  const int live_pairs = pairs.template load<Stage>(p, block, tid);  // its barrier publishes the inits too

  WgmmaCta<Cfg::kTokens> cta;
  // The swizzle acts on absolute address bits: align the stages to 1024 bytes (G reserves the slack).
  cta.smem = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  cta.pairs = &pairs;
  cta.full = full;
  cta.empty = empty;
  cta.expert = p.block_expert[block];
  cta.tile0 = blockIdx.x * G::kTilesPerCta;
  cta.tid = tid;
  const bool producer = tid >= Cfg::kWarps * 32;
  if (producer) ptx::setmaxnreg_dec<kWgmmaProducerRegs>();
  else ptx::setmaxnreg_inc<kWgmmaConsumerRegs>();
  if (live_pairs <= 16) wgmma_role<16, Cfg, Format, Stage>(p, cta, producer);
  else if (live_pairs <= 32) wgmma_role<32, Cfg, Format, Stage>(p, cta, producer);
  else if (live_pairs <= 64) wgmma_role<64, Cfg, Format, Stage>(p, cta, producer);
  else wgmma_role<128, Cfg, Format, Stage>(p, cta, producer);
}

}  // namespace mxmoe::kernels::gemm
