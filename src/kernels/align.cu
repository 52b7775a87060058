#include <cub/block/block_scan.cuh>

#include "kernels/align.hpp"
#include "mxmoe/device_buffer.hpp"
#include "kernels/launch.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels {
namespace {

// One CTA: count pairs per expert in shared memory, pick each expert's lane from its count, scan
// the per-expert block counts of each lane, then scatter. The order of pairs inside an expert's
// blocks depends on atomics, but each token's result does not: a GEMM column depends only on its
// own activation row, and an expert's lane only on its count. kThreads x kExpertsPerThread covers
// the experts; a small CTA serves small layers and batches, whose cost is the latency of the
// phases, not their work.
template <int kThreads, int kExpertsPerThread>
__global__ void __launch_bounds__(kThreads) align_kernel(const std::int32_t* __restrict__ topk_ids, int pairs,
                                                              int num_experts, AlignLane narrow, AlignLane wide, int wide_from) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int count[kThreads * kExpertsPerThread];
  // The expert's first slot in its lane's sorted_pairs; -1 - slot for the wide lane.
  __shared__ int first_slot[kThreads * kExpertsPerThread];
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

  int n_blocks[kExpertsPerThread], n_offsets[kExpertsPerThread], w_blocks[kExpertsPerThread], w_offsets[kExpertsPerThread];
#pragma unroll
  for (int j = 0; j < kExpertsPerThread; ++j) {
    const int e = tid * kExpertsPerThread + j;
    const int c = e < num_experts ? count[e] : 0;
    const bool to_wide = wide_from > 0 && c >= wide_from;
    n_blocks[j] = to_wide ? 0 : (c + narrow.block_tokens - 1) / narrow.block_tokens;
    w_blocks[j] = to_wide ? (c + wide.block_tokens - 1) / wide.block_tokens : 0;
  }
  int n_total = 0, w_total = 0;
  Scan(scan_storage).ExclusiveSum(n_blocks, n_offsets, n_total);
  __syncthreads();  // the scans share their storage
  Scan(scan_storage).ExclusiveSum(w_blocks, w_offsets, w_total);
  // Each expert's blocks, and the padding slots of its last block.
  auto place = [&](const AlignLane& lane, int e, int blocks, int offset, int c) {
    for (int b = 0; b < blocks; ++b) lane.block_expert[offset + b] = e;
    for (int s = c; s < blocks * lane.block_tokens; ++s) lane.sorted_pairs[offset * lane.block_tokens + s] = -1;
  };
#pragma unroll
  for (int j = 0; j < kExpertsPerThread; ++j) {
    const int e = tid * kExpertsPerThread + j;
    if (e >= num_experts) continue;
    if (w_blocks[j] > 0) {
      first_slot[e] = -1 - w_offsets[j] * wide.block_tokens;
      place(wide, e, w_blocks[j], w_offsets[j], count[e]);
    } else {
      first_slot[e] = n_offsets[j] * narrow.block_tokens;
      place(narrow, e, n_blocks[j], n_offsets[j], count[e]);
    }
  }
  if (tid == 0) {
    *narrow.num_blocks = n_total;
    if (wide_from > 0) *wide.num_blocks = w_total;
  }
  __syncthreads();
  // count[] becomes each expert's cursor.
  for (int e = tid; e < num_experts; e += kThreads) count[e] = 0;
  __syncthreads();
  for (int i = tid; i < pairs; i += kThreads) {
    const int e = topk_ids[i];
    if (e < 0 || e >= num_experts) continue;
    const int slot = atomicAdd(&count[e], 1);
    const int first = first_slot[e];
    if (first >= 0) narrow.sorted_pairs[first + slot] = i;
    else wide.sorted_pairs[-1 - first + slot] = i;
  }
}

}  // namespace

void launch_align(const std::int32_t* topk_ids, int pairs, int num_experts, const AlignLane& narrow, const AlignLane& wide,
                  int wide_from, cudaStream_t stream) {
  if (num_experts > kMaxAlignExperts)
    fail(ErrorCode::Unsupported, "token alignment supports at most " + std::to_string(kMaxAlignExperts) + " experts, got " + std::to_string(num_experts));
  if (narrow.block_tokens <= 0 || (wide_from > 0 && wide.block_tokens <= 0))
    fail(ErrorCode::InvalidArgument, "token alignment: a lane's block size must be positive");
  if (num_experts <= 256 && pairs <= 4096)
    launch_dependent(align_kernel<256, 1>, dim3(1), dim3(256), 0, stream, "align", topk_ids, pairs, num_experts, narrow,
                     wide, wide_from);
  else
    launch_dependent(align_kernel<1024, kMaxAlignExperts / 1024>, dim3(1), dim3(1024), 0, stream, "align", topk_ids,
                     pairs, num_experts, narrow, wide, wide_from);
}

}  // namespace mxmoe::kernels
