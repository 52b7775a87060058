// The expert blocks of a small batch (at most 32 routed pairs), computed by each GEMM CTA itself
// from the top-k ids, so that a decode step needs no separate alignment kernel. It yields the same
// blocks the align kernel would: experts in ascending order, each expert's pairs in ascending pair
// order, cut into blocks of kTokens.
#pragma once

#include <cstdint>

namespace mxmoe::kernels {

constexpr int kMaxSmallBatchPairs = 32;

// Run by warp 0. Returns the expert of block `block` (or -1 when there are fewer blocks) and
// writes its pair ids, padded with -1, to s_pair[0 .. kTokens).
template <int kTokens>
__device__ __forceinline__ int small_batch_block(const std::int32_t* __restrict__ topk_ids, int pairs, int num_experts,
                                                 int block, std::int32_t* s_pair) {
  const int lane = threadIdx.x % 32;
  const int id = lane < pairs ? topk_ids[lane] : -1;
  const bool valid = id >= 0 && id < num_experts;
  // first: this lane is its expert's first pair; count: the expert's pairs.
  bool first = valid;
  int count = 0;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int other = __shfl_sync(0xffffffffu, id, j);
    if (other == id) {
      count += 1;
      if (j < lane) first = false;
    }
  }
  const int blocks = first ? (count + kTokens - 1) / kTokens : 0;
  const unsigned first_mask = __ballot_sync(0xffffffffu, first);
  // start: blocks of all smaller experts.
  int start = 0;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int other = __shfl_sync(0xffffffffu, id, j);
    const int other_blocks = __shfl_sync(0xffffffffu, blocks, j);
    if (((first_mask >> j) & 1u) && other < id) start += other_blocks;
  }
  const unsigned owner = __ballot_sync(0xffffffffu, first && block >= start && block < start + blocks);
  int expert = -1, sub = 0;
  if (owner) {
    const int src = __ffs(owner) - 1;
    expert = __shfl_sync(0xffffffffu, id, src);
    sub = block - __shfl_sync(0xffffffffu, start, src);
  }
  const unsigned members = __ballot_sync(0xffffffffu, valid && id == expert);
  for (int slot = lane; slot < kTokens; slot += 32) {
    const int nth = sub * kTokens + slot;  // the nth pair of the expert
    s_pair[slot] = (expert >= 0 && slot < 32 && nth < __popc(members)) ? static_cast<int>(__fns(members, 0, nth + 1)) : -1;
  }
  return expert;
}

}  // namespace mxmoe::kernels
