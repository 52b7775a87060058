#include "kernels/gate_up_reduce.hpp"

#include <string>

#include "core/activation.hpp"
#include "kernels/gemm/operands.cuh"
#include "kernels/launch.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/ptx.cuh"
#include "mxmoe/error.hpp"

namespace mxmoe::kernels {
namespace {

constexpr int kReduceThreads = 256;

// One thread per (pair, feature). Every split's two loads are issued before the first add (the split
// loop is unrolled and predicated), so the splits arrive in one memory latency; the adds then run in
// split order, the same order whatever the batch.
template <class Ops>
__global__ void gate_up_reduce_kernel(const float* __restrict__ partial, int splits, std::int64_t split_stride,
                                      const std::int32_t* __restrict__ topk_ids, int pairs, int inter, int num_experts,
                                      ActivationKind kind, float limit, float alpha, std::uint16_t* __restrict__ out) {
  ptx::grid_dependency_wait();
  ptx::allow_dependents_launch();
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kReduceThreads + threadIdx.x;
  if (i >= static_cast<std::int64_t>(pairs) * inter) return;
  const int pair = static_cast<int>(i / inter), f = static_cast<int>(i % inter);
  const int e = topk_ids[pair];
  if (e < 0 || e >= num_experts) return;
  const float* row = partial + static_cast<std::int64_t>(pair) * 2 * inter + f;
  float gate[kMaxGemm1Splits], up[kMaxGemm1Splits];
#pragma unroll
  for (int z = 0; z < kMaxGemm1Splits; ++z) {
    gate[z] = up[z] = 0.0f;
    if (z >= splits) continue;
    gate[z] = row[z * split_stride];
    up[z] = row[z * split_stride + inter];
  }
  float g = gate[0], u = up[0];
#pragma unroll
  for (int z = 1; z < kMaxGemm1Splits; ++z) {
    if (z >= splits) break;
    g += gate[z];
    u += up[z];
  }
  out[i] = Ops::store(activate(kind, g, u, limit, alpha));
}

}  // namespace

void launch_gate_up_reduce(const float* partial, int splits, std::int64_t split_stride, const std::int32_t* topk_ids, int pairs,
                           int inter, int num_experts, const ActivationConfig& act, bool f16_out, std::uint16_t* inter_out,
                           cudaStream_t stream) {
  if (splits < 2 || splits > kMaxGemm1Splits)
    fail(ErrorCode::InvalidArgument, "gate_up_reduce: splits must be 2.." + std::to_string(kMaxGemm1Splits) + ", got " + std::to_string(splits));
  const std::int64_t n = static_cast<std::int64_t>(pairs) * inter;
  if (n <= 0) return;
  const dim3 grid(static_cast<unsigned>((n + kReduceThreads - 1) / kReduceThreads));
  auto kernel = f16_out ? gate_up_reduce_kernel<gemm::F16Operands> : gate_up_reduce_kernel<gemm::Bf16Operands>;
  launch_dependent(kernel, grid, dim3(kReduceThreads), 0, stream, "gate_up_reduce", partial, splits, split_stride, topk_ids, pairs,
                   inter, num_experts, act.kind, act.limit, act.alpha, inter_out);
}

}  // namespace mxmoe::kernels
