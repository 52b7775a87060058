#include "kernels/quantize_e4m3.hpp"

#include "formats/bf16.hpp"
#include "formats/e4m3.hpp"
#include "kernels/launch.hpp"
#include "kernels/ptx.cuh"
#include "mxmoe/device_buffer.hpp"

namespace mxmoe::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void unpack8(const uint4& v, float (&x)[8]) {
  const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    x[2 * i] = formats::bits_float(w[i] << 16);
    x[2 * i + 1] = formats::bits_float(w[i] & 0xffff0000u);
  }
}

// Programmatic dependent launch both ways: the next kernel (a GEMM, which waits for this grid before
// it reads its activations) may launch at once and stream its weights, also while this grid still
// waits for its own predecessor; this grid's completion implies its predecessor's (it waits for it:
// first when it reads the predecessor's output, else last). The intermediate's quantisation sits
// between GEMM1 and GEMM2: allowing GEMM2 only after waiting for GEMM1 (as before) made GEMM2 start
// its weight stream after GEMM1's last CTA, where W4A16's GEMM2 starts it while GEMM1's CTAs run.
// What GEMM2 reads before its wait stays final: it launches after every CTA of this grid started,
// hence after every GEMM1 CTA passed its own wait (gemm/block_pairs.cuh), so the block lists are
// complete.
template <bool kInputFromPrevious>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(const std::uint16_t* __restrict__ in, int cols,
                                                                  std::uint8_t* __restrict__ out, float* __restrict__ scale) {
  ptx::allow_dependents_launch();
  if constexpr (kInputFromPrevious) ptx::grid_dependency_wait();
  const std::int64_t row = blockIdx.x;
  const uint4* src = reinterpret_cast<const uint4*>(in + row * cols);
  const int units = cols / 8;
  // amax over the row; NaN elements are skipped (fmaxf returns the other operand), as the oracle's
  // comparison skips them.
  float amax = 0.0f;
  for (int u = threadIdx.x; u < units; u += kThreads) {
    float x[8];
    unpack8(src[u], x);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(x[i]));
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  __shared__ float warp_max[kThreads / 32];
  __shared__ float row_scale;
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
    row_scale = formats::fp8_row_scale(m);
    scale[row] = row_scale;
  }
  __syncthreads();
  const float inverse = 1.0f / row_scale;  // IEEE division (no fast math), as the oracle's
  uint2* dst = reinterpret_cast<uint2*>(out + row * cols);
  for (int u = threadIdx.x; u < units; u += kThreads) {
    float x[8];
    unpack8(src[u], x);
    std::uint32_t b[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 8; ++i) b[i / 4] |= static_cast<std::uint32_t>(formats::fp8_quantize(x[i], inverse)) << (8 * (i % 4));
    dst[u] = make_uint2(b[0], b[1]);
  }
  if constexpr (!kInputFromPrevious) ptx::grid_dependency_wait();
}

}  // namespace

void launch_quantize_rows_e4m3(const std::uint16_t* in, int rows, int cols, std::uint8_t* out, float* scale, bool input_from_previous,
                               cudaStream_t stream) {
  if (rows <= 0) return;
  if (cols % 8 != 0) fail(ErrorCode::InvalidArgument, "quantize_rows_e4m3: cols must be a multiple of 8, got " + std::to_string(cols));
  const dim3 grid(static_cast<unsigned>(rows)), block(kThreads);
  if (input_from_previous) launch_dependent(quantize_rows_kernel<true>, grid, block, 0, stream, "quantize_rows_e4m3", in, cols, out, scale);
  else launch_dependent(quantize_rows_kernel<false>, grid, block, 0, stream, "quantize_rows_e4m3", in, cols, out, scale);
}

}  // namespace mxmoe::kernels
