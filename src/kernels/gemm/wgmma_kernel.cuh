// The compute-bound GEMM kernel (sm_90a): E2M1 expert weights x 16-bit activations (W4A16: m64nNk16)
// or x e4m3 activations (W4A8, the Mxfp4E4m3 format: m64nNk32) on warpgroup MMA, composed from the
// same pieces as the mma.sync kernel (kernel.cuh): a configuration with kWgmma (kernels/moe_gemm.hpp:
// GemmWgmma), a weight format (gemm/weight_formats.cuh, whose operand type says how many MMA steps a
// chunk takes and how wide an activation is) and a stage (gemm/epilogues.cuh).
//
// Roles (warp specialisation, the producer/consumer form of CUTLASS's sm90 mainloops): the CTA is
// Cfg::kWarps / 4 consumer warpgroups and one producer warpgroup.
// - The producer issues every cp.async of a stage (weights, scales, the block's gathered activation
//   rows) and arrives on the stage's "full" mbarrier when its copies land
//   (cp.async.mbarrier.arrive.noinc: one arrival per producer thread). Before refilling a stage it
//   waits on the stage's "empty" mbarrier.
// - Consumer warp w dequantises weight tile tile0 + w exactly as the mma.sync kernel does (its 16
//   lane bytes of a 64-K chunk are its A fragments for four k16 steps, or two k32 steps of e4m3);
//   wgmma's register A operand has mma.sync's fragment layout per warp, so the four warps of a
//   warpgroup feed one m64nNk16 (m64nNk32)
//   whose N columns are routed pairs of one expert. The activations are the B operand, K-major in
//   shared memory: 128-byte-swizzled slabs of rows x 128 bytes (64 K of 16-bit values, 128 K of
//   e4m3; stage_loader.cuh: SwizzledActLoader), read through a matrix descriptor. Once the wgmma group that read a stage has
//   completed, each consumer warp arrives on its "empty" barrier.
// - setmaxnreg moves registers from the producer (copy addresses only) to the consumers
//   (accumulators, two A register sets). No CTA-wide barrier sits in the K loop.
// Measured on an H200 against the previous form (every warp copying, a CTA barrier per stage;
// bench/results/20261130-1450-H200-wgmma-ws): 7% faster at 1024 tokens, 2-4% at 4096, 1% at 16384.
//
// N follows the block: a block holds up to kTokens (GemmWgmma 128, GemmWgmmaNarrow 64) pairs of one
// expert; the CTA runs the main loop instantiated for N = kNarrowN or kTokens, the smaller that
// covers its live pairs, so
// an expert's partly filled block costs no more MMA (nor activation copies) than it needs.
//
// Pipeline per consumer warpgroup: each stage holds two chunks, one per A register set; per chunk
// it dequantises, issues its wgmma (four k16, or two k32), commits them as a group, then waits for the previous group, so
// chunk c + 1's dequantisation runs while chunk c's MMAs do and a register set is rewritten only
// after the group that read it has completed. No run-time branch may sit between wgmma groups
// (ptxas would serialise them: measured). cp.async writes shared memory through the generic proxy
// and wgmma reads it through the async proxy: consumers fence the proxies after the full barrier.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/block_pairs.cuh"
#include "kernels/gemm/epilogues.cuh"
#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/mbarrier.cuh"
#include "kernels/gemm/stage_loader.cuh"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// The CTA's pipeline state: the stage ring and its barriers persist across the work items (a
// (tile group, block) pair each) the CTA takes in turn; the roles' `iter` counts stages over all.
struct WgmmaCta {
  std::uint8_t* smem;    // 1024-byte aligned stages
  std::uint64_t* full;   // [kStages]: the producer's copies of the stage have landed
  std::uint64_t* empty;  // [kStages]: every consumer warp is done reading the stage
  int tid;
};
// One work item: an expert's block of pairs (double-buffered in shared memory, so the producer may
// stage the next item's while the consumers' epilogue reads this one's) x one group of row tiles.
// With W4A8 (Format::kActScale) the block's activation row scales sit beside its pairs (act_scale),
// copied by the producer with the item's first stage (wgmma_produce), so the epilogue reads them
// from shared memory: read from global memory per pair, the epilogue waited on each load in turn
// (ncu at dsv4-flash 4096 tokens: a third of GEMM2's consumer time went to those waits).
template <int kTokens>
struct WgmmaItem {
  const BlockPairs<kTokens>* pairs;
  float* act_scale;  // [kTokens]: slot i's activation row scale (W4A8 only; written by the producer)
  int expert, tile0;
};

// The N of a block: Cfg::kNarrowN up to that many live pairs, else Cfg::kTokens (GemmWgmma: 64 or
// 128; GemmWgmmaNarrow: 32 or 64). With a loop over items around them, ptxas keeps the wgmma
// asynchronous for two consumer bodies but serialises it (C7512, insufficient registers) from three
// on, so each configuration has two; smaller blocks are a configuration of their own.
constexpr int kWgmmaProducerRegs = 80, kWgmmaConsumerRegs = 144;  // 3 x 128 x 144 + 128 x 80 = 65536

// Whether producer thread ptid owns a block slot: every one of them where the block has a slot per
// producer thread, decided at compile time (a run-time test, which ptxas does not see through,
// spilled W4A8's GEMM1 in the producer's 80 registers).
template <class Cfg, class G>
__device__ __forceinline__ bool wgmma_slot_thread(int ptid) {
  if constexpr (Cfg::kTokens == G::kProducerThreads) return true;
  else return ptid < Cfg::kTokens;
}

// The producer warpgroup: every copy of every stage of one item. ptid: 0..127. The CTA's first
// item streams its first stages' weights before the dependency wait (they do not depend on the
// previous kernel), then their activations.
template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void wgmma_produce(const MoeGemmParams& p, const WgmmaCta& cta,
                                              const WgmmaItem<Cfg::kTokens>& item, int ptid, bool first, int& iter) {
  using PG = WgmmaProducerGeometryOf<Cfg, Format>;
  constexpr int S = Cfg::kStages;
  const int n_chunks = p.shape.chunks();
  const int k_iters = (n_chunks + Cfg::kChunksPerStage - 1) / Cfg::kChunksPerStage;
  const WeightLoader<Cfg, PG> weights(p, p.weights + item.expert * p.expert_weight_stride,
                                      p.scales + item.expert * p.expert_scale_stride, item.tile0, 0, n_chunks, ptid);
  const SwizzledActLoader<Cfg, PG, kN> acts(p, 0, p.shape.k, item.pairs->act_row, ptid);
  // The item's activation row scales travel with its first stage (the stage's full barrier covers
  // them; issued after the dependency wait that makes them final, like the activations): the
  // consumers read them after all its stages. Issued before the loop, not in it (the producer's 80
  // registers would spill).
  const auto load_act_scale = [&]() {
    if constexpr (Format::kActScale) {
      const int row = wgmma_slot_thread<Cfg, PG>(ptid) ? item.pairs->act_row[ptid] : -1;
      if (row >= 0) ptx::cp_async4(&item.act_scale[ptid], p.act_scale + row);
    }
  };
  int kt = 0;
  if (first) {  // iter == 0: every stage is free
    const int n = k_iters < S ? k_iters : S;
    for (int s = 0; s < n; ++s) weights.load_weights(cta.smem, s, s, ptid);
    if constexpr (!Stage::kWaitAtStart) ptx::grid_dependency_wait();
    load_act_scale();
    for (int s = 0; s < n; ++s) {
      acts.load_acts(cta.smem, s, s);
      ptx::cp_async_mbarrier_arrive(&cta.full[s]);  // covers every copy this thread issued before it
    }
    kt = iter = n;
  } else {
    load_act_scale();
  }
  for (; kt < k_iters; ++kt, ++iter) {
    const int s = iter % S;
    if (iter >= S) ptx::mbarrier_wait(&cta.empty[s], static_cast<std::uint32_t>((iter / S - 1) & 1));
    weights.load_weights(cta.smem, s, kt, ptid);
    acts.load_acts(cta.smem, s, kt);
    ptx::cp_async_mbarrier_arrive(&cta.full[s]);
  }
}

// A consumer warpgroup on one item: dequantisation, wgmma (Ops::kStepsPerChunk instructions per
// chunk: four k16 for 16-bit activations, two k32 for e4m3), then the stage's epilogue per 16-row
// tile (W4A8: each pair's product times its activation row's scale first).
template <int kN, class Cfg, class Format, class Stage>
__device__ __forceinline__ void wgmma_consume(const MoeGemmParams& p, const WgmmaCta& cta,
                                              const WgmmaItem<Cfg::kTokens>& item, int& iter) {
  using G = WgmmaGeometryOf<Cfg, Format>;
  using Ops = typename Format::Ops;
  constexpr int kAcc = kN / 2;  // m64nN: N/2 fp32 per thread
  constexpr int S = Cfg::kStages;
  const int tid = cta.tid, warp = tid / 32, lane = tid % 32;
  const int k_iters = (p.shape.chunks() + 1) / 2;  // a stage past the last chunk is zero codes
  float acc[kAcc];
  ptx::wgmma_zero_accumulators(acc);
  std::uint32_t a[2][4][4];
  // `iter` counts stages over the CTA's items; at each stage's first chunk the previous stage (this
  // item's, or the previous item's last) is released once its last group has completed.
  for (const int end = iter + k_iters; iter < end; ++iter) {
    // Unsigned: the stage, its parity and the previous stage are masks and shifts (a signed % and /
    // cost a chain of uniform instructions per stage).
    const unsigned u = static_cast<unsigned>(iter);
    const int s = static_cast<int>(u % S);
    ptx::mbarrier_wait(&cta.full[s], (u / S) & 1u);
    ptx::fence_proxy_async_shared();  // the copies, seen through the barrier, to wgmma's proxy
    const std::uint8_t* stage = cta.smem + s * G::kStageBytes;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int at = warp * 2 + c;  // this warp's tile, chunk c of the stage
      const uint4 wv = *reinterpret_cast<const uint4*>(stage + G::kWeightOffset + at * tiling::kChunkBytes + lane * 16);
      Format::dequant(wv, stage + G::kScaleOffset + at * G::kChunkScaleBytes, lane, a[c]);
      ptx::wgmma_fence();
#pragma unroll
      for (int step = 0; step < Ops::kStepsPerChunk; ++step) {
        // The stage's MMA step i reads slab i / 4 at byte (i % 4) x 32 of each row: 2 more in the
        // descriptor's address field per step (no carry out of it, the slab being 1024-byte aligned).
        constexpr int kSlabSteps = 4;
        const int i = c * Ops::kStepsPerChunk + step;
        const std::uint64_t desc = ptx::smem_desc_k128_swizzled(ptx::smem_addr(stage + G::kActOffset + (i / kSlabSteps) * G::kSlabBytes));
        Ops::template wgmma_step<kAcc>(acc, a[c][step], desc + 2 * (i % kSlabSteps));
      }
      ptx::wgmma_commit();
      ptx::wgmma_wait<1>();
      // The wait above is warpgroup-collective (.sync.aligned): once it returns, every lane's reads
      // of the previous stage are done, so lane 0 releases it for the warp without a __syncwarp.
      if (c == 0 && iter > 0 && lane == 0) ptx::mbarrier_arrive(&cta.empty[(u - 1u) % S]);
    }
  }
  ptx::wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < kAcc; ++i) ptx::fence_operand(acc[i]);

  const int tile = item.tile0 + warp;
  if (tile >= p.shape.tiles()) return;
  const int g = lane / 4, t = lane % 4;
  const Stage epilogue(p, item.expert, tile, g, 0);
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int slot = nt * 8 + 2 * t + j;
      if (item.pairs->pair[slot] < 0) continue;
      // acc[4nt + j] and acc[4nt + 2 + j]: rows g and g+8 of the warp's tile.
      store_pair<Format>(p, epilogue, item.pairs->pair[slot], item.act_scale[slot], item.pairs->weight[slot], acc[4 * nt + j],
                         acc[4 * nt + 2 + j]);
    }
}

template <class G>
__device__ __forceinline__ int wgmma_tiles_x(const MoeGemmParams& p) { return (p.shape.tiles() + G::kTilesPerCta - 1) / G::kTilesPerCta; }
template <class G>
__device__ __forceinline__ int wgmma_items(const MoeGemmParams& p) { return wgmma_tiles_x<G>(p) * *p.num_blocks; }

// Persistent CTAs: CTA c takes items c, c + gridDim.x, ... of tiles_x * *num_blocks, item i being
// block i / tiles_x (so the CTAs running at once share blocks, hence activations, and an expert's
// blocks, hence weights, in L2) and tile group i % tiles_x. A CTA's prologue (the stages' first
// fill) and epilogue overlap its neighbouring items' work instead of standing alone.
// Per item the producer stages the block's pairs in buffer j % 2 (after the consumers released it,
// pairs_empty), counts the live ones, and publishes them (pairs_full); both roles then run the main
// loop instantiated for the N that covers the live pairs.
template <class Cfg, class Format, class Stage>
__global__ void __launch_bounds__(WgmmaGeometryOf<Cfg, Format>::kBlockThreads, 1) moe_gemm_wgmma_kernel(const MoeGemmParams p) {
  using G = WgmmaGeometryOf<Cfg, Format>;
  static_assert(Cfg::kTokens <= G::kProducerThreads && Cfg::kNarrowN < Cfg::kTokens, "a producer thread per slot; two N bodies");
  static_assert(Cfg::kChunksPerStage == 2, "one A register set per chunk of a stage");
  if constexpr (!Stage::kWaitAtStart) ptx::allow_dependents_launch();  // the dependent waits for this grid anyway
  const int tiles_x = wgmma_tiles_x<G>(p);
  const int items = tiles_x * blocks_ready<Stage>(p);
  if (static_cast<int>(blockIdx.x) >= items) {
    exit_early<Stage>();
    return;
  }

  extern __shared__ __align__(16) std::uint8_t smem_raw[];
  __shared__ BlockPairs<Cfg::kTokens> pairs[2];
  __shared__ float act_scales[2][Format::kActScale ? Cfg::kTokens : 1];
  __shared__ int live[2];
  __shared__ __align__(8) std::uint64_t full[Cfg::kStages], empty[Cfg::kStages], pairs_full[2], pairs_empty[2];
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < Cfg::kStages; ++s) {
      ptx::mbarrier_init(&full[s], G::kProducerThreads);  // one arrival per producer thread
      ptx::mbarrier_init(&empty[s], Cfg::kWarps);         // one per consumer warp
    }
    for (int b = 0; b < 2; ++b) {
      ptx::mbarrier_init(&pairs_full[b], G::kProducerThreads);
      ptx::mbarrier_init(&pairs_empty[b], Cfg::kWarps);
    }
  }
  Format::init_shared(tid);
  __syncthreads();  // the inits, to every thread

  WgmmaCta cta;
  // The swizzle acts on absolute address bits: align the stages to 1024 bytes (G reserves the slack).
  cta.smem = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  cta.full = full;
  cta.empty = empty;
  cta.tid = tid;
  const bool producer = tid >= Cfg::kWarps * 32;
  if (producer) {
    ptx::setmaxnreg_dec<kWgmmaProducerRegs>();
    const int ptid = tid - Cfg::kWarps * 32;
    int j = 0, iter = 0;
    for (int i = blockIdx.x; i < items; i += gridDim.x, ++j) {
      const int buf = j & 1, block = i / tiles_x;
      if (j >= 2) ptx::mbarrier_wait(&pairs_empty[buf], static_cast<std::uint32_t>((j / 2 - 1) & 1));
      // Live pairs come first in a block, and its first slot is live: one thread sees the last.
      // (GemmWgmmaNarrow: slots 0..63; the other producer threads only copy.)
      if (wgmma_slot_thread<Cfg, G>(ptid)) {
        const int id = pairs[buf].template load_slot<Stage>(p, block, ptid);
        const bool next_live = ptid + 1 < Cfg::kTokens && p.sorted_pairs[block * Cfg::kTokens + ptid + 1] >= 0;
        if (id >= 0 && !next_live) live[buf] = ptid + 1;
      }
      ptx::named_barrier_sync<1, G::kProducerThreads>();
      ptx::mbarrier_arrive(&pairs_full[buf]);
      const WgmmaItem<Cfg::kTokens> item{&pairs[buf], act_scales[buf], p.block_expert[block], (i % tiles_x) * G::kTilesPerCta};
      const int n = live[buf];
      if (n <= Cfg::kNarrowN) wgmma_produce<Cfg::kNarrowN, Cfg, Format, Stage>(p, cta, item, ptid, j == 0, iter);
      else wgmma_produce<Cfg::kTokens, Cfg, Format, Stage>(p, cta, item, ptid, j == 0, iter);
    }
    ptx::cp_async_wait_all();
  } else {
    ptx::setmaxnreg_inc<kWgmmaConsumerRegs>();
    // The consumers re-derive the loop's values per item rather than carry them (tried while N had
    // four bodies, against C7512; kept as measured).
    for (int i = blockIdx.x; i < wgmma_items<G>(p); i += gridDim.x) {
      const int tiles_x = wgmma_tiles_x<G>(p);
      const int j = (i - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x);  // the CTA's item count so far
      const int buf = j & 1, block = i / tiles_x;
      int iter = j * ((p.shape.chunks() + 1) / 2);  // every item runs the same stages
      ptx::mbarrier_wait(&pairs_full[buf], static_cast<std::uint32_t>((j / 2) & 1));
      const WgmmaItem<Cfg::kTokens> item{&pairs[buf], act_scales[buf], p.block_expert[block], (i % tiles_x) * G::kTilesPerCta};
      const int n = live[buf];
      if (n <= Cfg::kNarrowN) wgmma_consume<Cfg::kNarrowN, Cfg, Format, Stage>(p, cta, item, iter);
      else wgmma_consume<Cfg::kTokens, Cfg, Format, Stage>(p, cta, item, iter);
      __syncwarp();
      if (tid % 32 == 0) ptx::mbarrier_arrive(&pairs_empty[buf]);  // its epilogue is done with the pairs
    }
  }
}

}  // namespace mxmoe::kernels::gemm
