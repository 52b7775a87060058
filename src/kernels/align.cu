#include <cub/block/block_scan.cuh>

#include "kernels/align.hpp"
#include "mxmoe/device_buffer.hpp"
#include "kernels/launch.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels {
namespace {

// One CTA: count pairs per expert in shared memory, scan the per-expert block counts, then
// scatter. The order of pairs inside an expert's blocks depends on atomics, but each token's
// result does not: a GEMM column depends only on its own activation row. kThreads x
// kExpertsPerThread covers the experts; a small CTA serves small layers and batches, whose cost is
// the latency of the phases, not their work.
template <int kThreads, int kExpertsPerThread>
__global__ void __launch_bounds__(kThreads) align_kernel(const std::int32_t* __restrict__ topk_ids, int pairs,
                                                              int num_experts, int block_tokens,
                                                              std::int32_t* __restrict__ sorted_pairs,
                                                              std::int32_t* __restrict__ block_expert,
                                                              std::int32_t* __restrict__ num_blocks) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int count[kThreads * kExpertsPerThread];
  __shared__ int first_block[kThreads * kExpertsPerThread];
  const int tid = threadIdx.x;

  for (int e = tid; e < num_experts; e += kThreads) count[e] = 0;
  ptx::grid_dependency_wait();  // topk_ids come from the previous kernel
  ptx::allow_dependents_launch();
  __syncthreads();
  for (int i = tid; i < pairs; i += kThreads) {
    const int e = topk_ids[i];
    if (e >= 0 && e < num_experts) atomicAdd(&count[e], 1);
  }
  __syncthreads();

  int blocks[kExpertsPerThread], offsets[kExpertsPerThread];
#pragma unroll
  for (int j = 0; j < kExpertsPerThread; ++j) {
    const int e = tid * kExpertsPerThread + j;
    blocks[j] = e < num_experts ? (count[e] + block_tokens - 1) / block_tokens : 0;
  }
  int total = 0;
  Scan(scan_storage).ExclusiveSum(blocks, offsets, total);
#pragma unroll
  for (int j = 0; j < kExpertsPerThread; ++j) {
    const int e = tid * kExpertsPerThread + j;
    if (e >= num_experts) continue;
    first_block[e] = offsets[j];
    for (int b = 0; b < blocks[j]; ++b) block_expert[offsets[j] + b] = e;
    // Padding slots of the expert's last block.
    for (int s = count[e]; s < blocks[j] * block_tokens; ++s) sorted_pairs[offsets[j] * block_tokens + s] = -1;
  }
  if (tid == 0) *num_blocks = total;
  __syncthreads();
  // count[] becomes each expert's cursor.
  for (int e = tid; e < num_experts; e += kThreads) count[e] = 0;
  __syncthreads();
  for (int i = tid; i < pairs; i += kThreads) {
    const int e = topk_ids[i];
    if (e < 0 || e >= num_experts) continue;
    const int slot = atomicAdd(&count[e], 1);
    sorted_pairs[first_block[e] * block_tokens + slot] = i;
  }
}

}  // namespace

void launch_align(const std::int32_t* topk_ids, int pairs, int num_experts, int block_tokens, std::int32_t* sorted_pairs,
                  std::int32_t* block_expert, std::int32_t* num_blocks, cudaStream_t stream) {
  if (num_experts > kMaxAlignExperts)
    fail(ErrorCode::Unsupported, "token alignment supports at most " + std::to_string(kMaxAlignExperts) + " experts, got " + std::to_string(num_experts));
  if (num_experts <= 256 && pairs <= 4096)
    launch_dependent(align_kernel<256, 1>, dim3(1), dim3(256), 0, stream, "align", topk_ids, pairs, num_experts,
                     block_tokens, sorted_pairs, block_expert, num_blocks);
  else
    launch_dependent(align_kernel<1024, kMaxAlignExperts / 1024>, dim3(1), dim3(1024), 0, stream, "align", topk_ids,
                     pairs, num_experts, block_tokens, sorted_pairs, block_expert, num_blocks);
}

}  // namespace mxmoe::kernels
