#include "formats/bf16.hpp"
#include "kernels/combine.hpp"
#include "kernels/cuda_check.hpp"
#include "kernels/launch.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels {
namespace {

constexpr int kCombineThreads = 256;

// One CTA per (token, slice of H); four hidden features per thread (H is a multiple of 32).
__global__ void combine_kernel(const float* __restrict__ partial, const std::int32_t* __restrict__ topk_ids, int top_k,
                               int hidden, int num_experts, std::uint16_t* __restrict__ out) {
  const int token = blockIdx.x;
  const int h = (blockIdx.y * kCombineThreads + threadIdx.x) * 4;
  ptx::grid_dependency_wait();
  ptx::allow_dependents_launch();
  if (h >= hidden) return;
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s = 0; s < top_k; ++s) {
    const int pair = token * top_k + s;
    const int e = topk_ids[pair];
    if (e < 0 || e >= num_experts) continue;
    const float4 v = *reinterpret_cast<const float4*>(partial + static_cast<std::int64_t>(pair) * hidden + h);
    sum.x += v.x;
    sum.y += v.y;
    sum.z += v.z;
    sum.w += v.w;
  }
  const uint2 packed = make_uint2(formats::float_to_bf16(sum.x) | static_cast<std::uint32_t>(formats::float_to_bf16(sum.y)) << 16,
                                  formats::float_to_bf16(sum.z) | static_cast<std::uint32_t>(formats::float_to_bf16(sum.w)) << 16);
  *reinterpret_cast<uint2*>(out + static_cast<std::int64_t>(token) * hidden + h) = packed;
}

}  // namespace

void launch_combine(const float* partial, const std::int32_t* topk_ids, int num_tokens, int top_k, int hidden,
                    int num_experts, std::uint16_t* out, cudaStream_t stream) {
  if (num_tokens <= 0) return;
  const dim3 grid(static_cast<unsigned>(num_tokens), (hidden / 4 + kCombineThreads - 1) / kCombineThreads);
  launch_dependent(combine_kernel, grid, dim3(kCombineThreads), 0, stream, "combine", partial, topk_ids, top_k, hidden,
                   num_experts, out);
}

}  // namespace mxmoe::kernels
