// Token alignment: the routed (token, slot) pairs sorted by expert into blocks of a GEMM's token
// count, on the GPU, with no host synchronisation; one block list per lane (kernels::GemmLanes).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mxmoe::kernels {

constexpr int kMaxAlignExperts = 4096;

// One lane's output: sorted_pairs [max blocks * block_tokens] (pair index t*k+s, or -1 for
// padding), block_expert [max blocks], *num_blocks. Only the first *num_blocks blocks are written.
struct AlignLane {
  std::int32_t* sorted_pairs = nullptr;
  std::int32_t* block_expert = nullptr;
  std::int32_t* num_blocks = nullptr;
  int block_tokens = 0;
};

// topk_ids [pairs] (ids outside 0..E-1, such as -1, are skipped without touching anything). An
// expert with at least `wide_from` pairs goes to `wide`, every other to `narrow`; wide_from 0: no
// wide lane (`wide` is not touched).
void launch_align(const std::int32_t* topk_ids, int pairs, int num_experts, const AlignLane& narrow, const AlignLane& wide,
                  int wide_from, cudaStream_t stream);

}  // namespace mxmoe::kernels
