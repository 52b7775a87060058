#include <cuda_fp16.h>

#include "formats/bf16.hpp"
#include "kernels/combine.hpp"
#include "mxmoe/device_buffer.hpp"
#include "kernels/launch.hpp"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels {
namespace {

constexpr int kCombineThreads = 256;
constexpr int kMaxCombineTopK = 16;

struct Bf16Out {
  __device__ static std::uint32_t bits(float v) { return formats::float_to_bf16(v); }
};
struct F16Out {
  __device__ static std::uint32_t bits(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

// One CTA per (token, slice of H); four hidden features per thread (H is a multiple of 32).
template <class Out>
__global__ void combine_kernel(const float* __restrict__ partial, int splits, std::int64_t split_stride,
                               const std::int32_t* __restrict__ topk_ids, int top_k, int hidden, int num_experts,
                               std::uint16_t* __restrict__ out) {
  const int token = blockIdx.x;
  const int h = (blockIdx.y * kCombineThreads + threadIdx.x) * 4;
  ptx::grid_dependency_wait();
  ptx::allow_dependents_launch();
  if (h >= hidden) return;
  // All loads are issued before the first add (the slot loop is unrolled and predicated), so a
  // token's k partial rows arrive in one memory latency rather than k.
  float4 v[kMaxCombineTopK];
#pragma unroll
  for (int s = 0; s < kMaxCombineTopK; ++s) {
    v[s] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (s >= top_k) continue;
    const int pair = token * top_k + s;
    const int e = topk_ids[pair];
    if (e < 0 || e >= num_experts) continue;
    const float* row = partial + static_cast<std::int64_t>(pair) * hidden + h;
    v[s] = *reinterpret_cast<const float4*>(row);
    for (int z = 1; z < splits; ++z) {
      const float4 more = *reinterpret_cast<const float4*>(row + z * split_stride);
      v[s].x += more.x;
      v[s].y += more.y;
      v[s].z += more.z;
      v[s].w += more.w;
    }
  }
  float4 sum = v[0];
#pragma unroll
  for (int s = 1; s < kMaxCombineTopK; ++s) {
    sum.x += v[s].x;
    sum.y += v[s].y;
    sum.z += v[s].z;
    sum.w += v[s].w;
  }
  const uint2 packed = make_uint2(Out::bits(sum.x) | Out::bits(sum.y) << 16, Out::bits(sum.z) | Out::bits(sum.w) << 16);
  *reinterpret_cast<uint2*>(out + static_cast<std::int64_t>(token) * hidden + h) = packed;
}

}  // namespace

void launch_combine(const float* partial, int splits, std::int64_t split_stride, const std::int32_t* topk_ids,
                    int num_tokens, int top_k, int hidden, int num_experts, bool f16_out, std::uint16_t* out,
                    cudaStream_t stream) {
  if (num_tokens <= 0) return;
  if (top_k > kMaxCombineTopK)
    fail(ErrorCode::Unsupported, "combine supports top_k up to " + std::to_string(kMaxCombineTopK) + ", got " + std::to_string(top_k));
  const dim3 grid(static_cast<unsigned>(num_tokens), (hidden / 4 + kCombineThreads - 1) / kCombineThreads);
  launch_dependent(f16_out ? combine_kernel<F16Out> : combine_kernel<Bf16Out>, grid, dim3(kCombineThreads), 0, stream, "combine", partial, splits, split_stride,
                   topk_ids, top_k, hidden, num_experts, out);
}

}  // namespace mxmoe::kernels
