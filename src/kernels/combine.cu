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

__device__ __forceinline__ void add_to(float4& a, const float4& b) {
  a.x += b.x;
  a.y += b.y;
  a.z += b.z;
  a.w += b.w;
}

// One CTA per (token, slice of H); four hidden features per thread (H is a multiple of 32).
// At one token the combine sits on the critical path after GEMM2, so its loads must be in flight
// together: the token's ids (one round trip), then all its k x kSplits partial rows (one more).
// kSplits: GEMM2's K splits (gemm2_k_splits), unrolled where kSplits x kMaxK partial rows fit the
// registers (at most kMaxHeldRows float4s); 0 takes any count in a loop.
// kMaxK: the slots unrolled (top_k <= kMaxK), so that the rows fit the registers at once (with 16
// slots of two splits ptxas interleaved loads with the adds: one latency per few rows; with the
// splits in a runtime loop every slot was a chain of its own). Sums in the order slot 0..k-1, each
// slot's splits first, as before.
template <class Out, int kSplits, int kMaxK>
__global__ void __launch_bounds__(kCombineThreads, 1) combine_kernel(const float* __restrict__ partial, int splits, std::int64_t split_stride,
                               const std::int32_t* __restrict__ topk_ids, int top_k, int hidden, int num_experts,
                               std::uint16_t* __restrict__ out) {
  constexpr int kHeld = kSplits > 0 ? kSplits : 1;  // the splits held in registers
  const int token = blockIdx.x;
  const int h = (blockIdx.y * kCombineThreads + threadIdx.x) * 4;
  ptx::grid_dependency_wait();
  ptx::allow_dependents_launch();
  if (h >= hidden) return;
  bool live[kMaxK];
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) {
    const int e = s < top_k ? topk_ids[token * top_k + s] : -1;
    live[s] = e >= 0 && e < num_experts;
  }
  const float* rows = partial + static_cast<std::int64_t>(token) * top_k * hidden + h;
  // Every load is unconditional (a dead slot reads the token's first row, which exists, and drops
  // it): predicated loads were issued a few at a time, each batch after the last one's adds.
  float4 v[kMaxK][kHeld];
#pragma unroll
  for (int s = 0; s < kMaxK; ++s)
#pragma unroll
    for (int z = 0; z < kHeld; ++z)
      v[s][z] = *reinterpret_cast<const float4*>(live[s] ? rows + s * hidden + z * split_stride : rows);
#pragma unroll
  for (int s = 0; s < kMaxK; ++s)
#pragma unroll
    for (int z = 0; z < kHeld; ++z)
      if (!live[s]) v[s][z] = make_float4(0.f, 0.f, 0.f, 0.f);
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) {
    float4 slot = v[s][0];
#pragma unroll
    for (int z = 1; z < kHeld; ++z) add_to(slot, v[s][z]);
    if constexpr (kSplits == 0) {
      for (int z = 1; live[s] && z < splits; ++z) add_to(slot, *reinterpret_cast<const float4*>(rows + s * hidden + z * split_stride));
    }
    if (s == 0) sum = slot;  // not 0 + slot: a -0 sum stays -0, as before
    else add_to(sum, slot);
  }
  const uint2 packed = make_uint2(Out::bits(sum.x) | Out::bits(sum.y) << 16, Out::bits(sum.z) | Out::bits(sum.w) << 16);
  *reinterpret_cast<uint2*>(out + static_cast<std::int64_t>(token) * hidden + h) = packed;
}

using CombineKernel = void (*)(const float*, int, std::int64_t, const std::int32_t*, int, int, int, std::uint16_t*);
// The partial rows one thread may hold at once: 32 float4s are 128 registers of the 255 that one
// CTA per SM allows (kMaxCombineTopK x 2 splits, 8 x 4, 4 x 8).
constexpr int kMaxHeldRows = 32;
template <class Out, int kSplits, int kMaxK>
CombineKernel combine_if_held() {
  if constexpr (kSplits * kMaxK <= kMaxHeldRows) return combine_kernel<Out, kSplits, kMaxK>;
  else return combine_kernel<Out, 0, kMaxK>;  // (not instantiating the held form, which would spill)
}
template <class Out, int kSplits>
CombineKernel combine_for_k(int top_k) {
  return top_k <= 4   ? combine_if_held<Out, kSplits, 4>()
         : top_k <= 8 ? combine_if_held<Out, kSplits, 8>()
                      : combine_if_held<Out, kSplits, kMaxCombineTopK>();
}
template <class Out>
CombineKernel combine_for(int splits, int top_k) {
  switch (splits) {
    case 1: return combine_for_k<Out, 1>(top_k);
    case 2: return combine_for_k<Out, 2>(top_k);
    case 4: return combine_for_k<Out, 4>(top_k);
    case 8: return combine_for_k<Out, 8>(top_k);
    default: return combine_for_k<Out, 0>(top_k);
  }
}

}  // namespace

void launch_combine(const float* partial, int splits, std::int64_t split_stride, const std::int32_t* topk_ids,
                    int num_tokens, int top_k, int hidden, int num_experts, bool f16_out, std::uint16_t* out,
                    cudaStream_t stream) {
  if (num_tokens <= 0) return;
  if (top_k > kMaxCombineTopK)
    fail(ErrorCode::Unsupported, "combine supports top_k up to " + std::to_string(kMaxCombineTopK) + ", got " + std::to_string(top_k));
  const dim3 grid(static_cast<unsigned>(num_tokens), (hidden / 4 + kCombineThreads - 1) / kCombineThreads);
  launch_dependent(f16_out ? combine_for<F16Out>(splits, top_k) : combine_for<Bf16Out>(splits, top_k), grid, dim3(kCombineThreads), 0, stream,
                   "combine", partial, splits, split_stride,
                   topk_ids, top_k, hidden, num_experts, out);
}

}  // namespace mxmoe::kernels
