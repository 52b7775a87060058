// Direct blocks (GemmLanes::direct: no align kernel ran): which blocks run and which pairs each
// holds, read straight from the forward's topk ids. A host/device twin: the GEMM kernels call it
// (gemm/block_pairs.cuh) and the CPU tests check that it partitions the routed pairs.
//
// Block b stands for routed pair b. One token (grouped = false): each pair is a block of its own (a
// token's experts are distinct). Two tokens (grouped = true, GemmLanes::direct_groups): the pairs of
// one expert, in pair order, are cut into groups of kTokens, and the block of a group's first pair
// runs the whole group, as the align kernel would have made one block of them (two tokens sharing an
// expert read its weights once); every other block exits. Repeated ids within a token only make more
// groups. The plan runs direct blocks only up to kDirectMaxPairs pairs, so a thread reads them all
// in an unrolled loop; the kernels pass a copy of the ids in shared memory (gemm/block_pairs.cuh):
// from global memory, ptxas issued the predicated loads in batches of four to six, each batch's
// compares waiting on its loads, four round trips per scan (~1 us per CTA start, measured).
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"
#include "kernels/moe_gemm.hpp"

namespace mxmoe::kernels::gemm {

// A pair's rank among its expert's earlier pairs (0 when not grouped).
MXMOE_HD int direct_rank(const std::int32_t* ids, bool grouped, int pair) {
  if (!grouped) return 0;
  const int e = ids[pair];
  int rank = 0;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int q = 0; q < kDirectMaxPairs; ++q) rank += q < pair && ids[q] == e;
  return rank;
}

// Whether direct block `block` runs: its id is an expert (0..num_experts-1; -1 is masked, and ids
// past E are skipped) and its pair is its group's first.
template <int kTokens>
MXMOE_HD bool direct_block_runs(const std::int32_t* ids, bool grouped, int num_experts, int block) {
  const int e = ids[block];
  return e >= 0 && e < num_experts && direct_rank(ids, grouped, block) % kTokens == 0;
}

// Slot `slot` of a running direct block: the slot-th pair of its expert from the block's own pair
// on, or -1 (only a group's first pair runs, so these are its group; slot < kTokens).
MXMOE_HD int direct_slot(const std::int32_t* ids, bool grouped, int pairs, int block, int slot) {
  if (!grouped) return slot == 0 ? block : -1;
  const int e = ids[block];
  int found = -1, seen = 0;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int q = 0; q < kDirectMaxPairs; ++q) {
    if (q >= block && q < pairs && ids[q] == e) {
      if (seen == slot) found = q;
      ++seen;
    }
  }
  return found;
}

}  // namespace mxmoe::kernels::gemm
