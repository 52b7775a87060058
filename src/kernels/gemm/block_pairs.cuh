// What both GEMM kernels do first: the dependency wait, the early exit of blocks past the align
// kernel's count, and the block's routed pairs staged in shared memory.
#pragma once

#include <cstdint>

#include "kernels/gemm/direct_blocks.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// Dependencies: GEMM1 reads the block list the align kernel (its predecessor) writes. GEMM2's
// predecessor is GEMM1, which lets it launch only after passing its own wait, so the block list is
// complete and GEMM2 may read it, and stream its first weight stages, before waiting for the
// intermediate activations (Stage::kWaitAtStart false: the kernel waits after its weight prologue).
// A block past the align kernel's count waits too before it exits: a grid's completion must imply
// its predecessor's, since the next kernel (a second lane, the combine) waits only for this one;
// a lane whose blocks all exit at once would otherwise let it read an unfinished intermediate.
// blocks_ready: the stage's dependency wait where it comes first, then the block count;
// exit_early: what a CTA with no block does before it returns.
template <class Stage>
__device__ __forceinline__ int blocks_ready(const MoeGemmParams& p) {
  if constexpr (Stage::kWaitAtStart) {
    ptx::grid_dependency_wait();
    ptx::allow_dependents_launch();
  }
  return p.direct_ids ? p.direct_blocks : *p.num_blocks;
}
// The expert of `block` (direct blocks: its pair's id, possibly out of range).
__device__ __forceinline__ int block_expert(const MoeGemmParams& p, int block) {
  return p.direct_ids ? p.direct_ids[block] : p.block_expert[block];
}
template <class Stage>
__device__ __forceinline__ void exit_early() {
  if constexpr (!Stage::kWaitAtStart) ptx::grid_dependency_wait();
}
// Direct groups scan every routed pair's id (direct_blocks.hpp); from global memory each scan was
// four rounds of predicated loads (~1 us per CTA start, bench/results/20261202-0123-H200-direct-two-groups),
// so the CTA's first kDirectMaxPairs threads copy the ids into shared memory once (-1 past the
// pairs), one barrier, and both scans read them there.
__device__ __forceinline__ std::int32_t* direct_ids_shared() {
  __shared__ std::int32_t ids[kDirectMaxPairs];
  return ids;
}
// The ids the direct-block rule reads: shared memory for groups (after stage_direct_ids), else the
// forward's own (one token reads only its block's id).
__device__ __forceinline__ const std::int32_t* direct_ids(const MoeGemmParams& p) {
  return p.direct_groups ? direct_ids_shared() : p.direct_ids;
}
__device__ __forceinline__ void stage_direct_ids(const MoeGemmParams& p) {
  const int t = threadIdx.x;
  if (t < kDirectMaxPairs) direct_ids_shared()[t] = t < p.direct_blocks ? p.direct_ids[t] : -1;
  __syncthreads();
}

// Whether `block` exists (the mma.sync kernel: one CTA per block, at least kDirectMaxPairs threads);
// a direct block whose id is masked (-1) or out of range, or whose pair is not its group's first,
// does not (direct_blocks.hpp). The ids are read after the wait that makes them final (GEMM1 waits
// first; GEMM2 launches after GEMM1's blocks passed theirs). Every branch before the barrier of
// stage_direct_ids is uniform over the CTA.
template <class Stage, int kTokens>
__device__ __forceinline__ bool begin_block(const MoeGemmParams& p, int block) {
  if (block < blocks_ready<Stage>(p)) {
    if (!p.direct_ids) return true;
    if (p.direct_groups) stage_direct_ids(p);
    if (direct_block_runs<kTokens>(direct_ids(p), p.direct_groups, p.num_experts, block)) return true;
  }
  exit_early<Stage>();
  return false;
}

// A block's kTokens slots: its expert's (token, slot) pairs first, padding (-1) after.
template <int kTokens>
struct BlockPairs {
  std::int32_t pair[kTokens];     // pair id or -1
  std::int32_t act_row[kTokens];  // its activation row (pair / act_row_divisor) or -1
  float weight[kTokens];          // Stage::pair_weight (GEMM2's router weight; 1 for GEMM1)

  // Slot `slot` of `block` (the align kernel's order), its act_row and weight.
  template <class Stage>
  __device__ int load_slot(const MoeGemmParams& p, int block, int slot) {
    const int id = p.direct_ids ? direct_slot(direct_ids(p), p.direct_groups, p.direct_blocks, block, slot) : p.sorted_pairs[block * kTokens + slot];
    pair[slot] = id;
    act_row[slot] = id >= 0 ? id / p.act_row_divisor : -1;
    weight[slot] = id >= 0 ? Stage::pair_weight(p, id) : 0.0f;
    return id;
  }

  // Threads 0..kTokens-1 load one slot each; returns the live pairs, after a barrier that makes the
  // whole block visible to every thread.
  template <class Stage>
  __device__ int load(const MoeGemmParams& p, int block, int tid) {
    const int id = tid < kTokens ? load_slot<Stage>(p, block, tid) : -1;
    return __syncthreads_count(id >= 0);
  }
};

}  // namespace mxmoe::kernels::gemm
