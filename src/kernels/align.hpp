// Token alignment: the routed (token, slot) pairs sorted by expert into blocks of a GEMM's token
// count, on the GPU, with no host synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mxmoe::kernels {

// The most blocks `pairs` routed pairs can need: sum_e ceil(c_e / B) <= floor(pairs / B) + min(E, pairs).
inline int max_align_blocks(int pairs, int num_experts, int block_tokens) {
  return pairs / block_tokens + (pairs < num_experts ? pairs : num_experts);
}

constexpr int kMaxAlignExperts = 4096;

// topk_ids [pairs] (ids outside 0..E-1, such as -1, are skipped without touching anything) ->
// sorted_pairs [max_blocks * block_tokens] (pair index t*k+s, or -1 for padding), block_expert
// [max_blocks], *num_blocks. Only the first *num_blocks blocks are written.
void launch_align(const std::int32_t* topk_ids, int pairs, int num_experts, int block_tokens, std::int32_t* sorted_pairs,
                  std::int32_t* block_expert, std::int32_t* num_blocks, cudaStream_t stream);

}  // namespace mxmoe::kernels
