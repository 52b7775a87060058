// The ceiling of the wgmma kernel's consumer loop (gemm/wgmma_kernel.cuh), without its producer,
// barriers or epilogue: W warpgroups per CTA, one CTA per SM, each warpgroup running the kernel's
// per-chunk pattern (dequantise one A register set from shared memory through the weight format's
// own dequant, wgmma fence, the chunk's MMA steps, commit, wait for the previous group) over a
// fixed ring of shared-memory stages that nothing refills. It answers: how fast can register-A
// wgmma go at this N with this many warpgroups (dequant "none": the A registers never change), and
// how much of that does the format's dequantisation leave (dequant "format").
//
// Usage: mxmoe_wgmma_ceiling [iterations]  (prints one line per variant: TFLOP/s)
// The data are fixed nonzero bytes (e4m3 ~ 0.5..1, bf16 ~ 1), so no NaN/Inf and realistic toggling.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "kernels/gemm/geometry.hpp"
#include "kernels/gemm/weight_formats.cuh"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/ptx.cuh"
#include "mxmoe/device_buffer.hpp"

namespace {

using namespace mxmoe::kernels;

using mxmoe::check_cuda;

// The wgmma kernel's own stage layout (gemm/geometry.hpp) for kWgs consumer warpgroups over kN
// tokens: [activation slabs][weight chunks][scales], two 64-K chunks per stage, four stages.
template <int kN, int kWgs>
struct CeilingCfg {
  static constexpr int kTokens = kN, kWarps = 4 * kWgs, kTilesPerWarp = 1, kChunksPerStage = 2, kStages = 4;
};

// kN: wgmma N (64 or 128); kWgs: consumer warpgroups; kDequant: run Format::dequant per chunk.
template <class Format, int kN, int kWgs, bool kDequant>
__global__ void __launch_bounds__(kWgs * 128, 1) ceiling_kernel(int iterations, float* sink) {
  using Ops = typename Format::Ops;
  using G = gemm::WgmmaGeometryOf<CeilingCfg<kN, kWgs>, Format>;
  constexpr int kAcc = kN / 2, kStages = CeilingCfg<kN, kWgs>::kStages;
  extern __shared__ __align__(16) std::uint8_t smem_raw[];
  std::uint8_t* smem = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // Activations: e4m3 0x30..0x37 (0.5..~0.9) or bf16 0x3f80 (1.0) pairs; weights: arbitrary codes;
  // scales: e8m0 bytes 127 (x1) for Mxfp4, table index 13 (shift 0) for Mxfp4E4m3.
  for (int i = tid; i < kStages * G::kStageBytes / 4; i += blockDim.x) {
    const int in_stage = (i * 4) % G::kStageBytes;
    std::uint32_t v;
    if (in_stage < G::kWeightOffset) v = Ops::kActBytes == 2 ? 0x3f803f80u : 0x33323130u + (i & 0x07070707u);
    else if (in_stage < G::kScaleOffset) v = 0x9e3779b9u * (i + 1);
    else v = Format::kActScale ? 0x0d0d0d0du : 0x7f7f7f7fu;
    reinterpret_cast<std::uint32_t*>(smem)[i] = v;
  }
  Format::init_shared(tid);
  __syncthreads();

  float acc[kAcc];
  ptx::wgmma_zero_accumulators(acc);
  std::uint32_t a[2][4][4];
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int r = 0; r < 4; ++r) a[c][s][r] = Ops::kActBytes == 2 ? 0x3f803f80u : 0x38383838u;
  for (int it = 0; it < iterations; ++it) {
    const std::uint8_t* stage = smem + (it % kStages) * G::kStageBytes;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if constexpr (kDequant) {
        const int at = warp * 2 + c;  // as the kernel: this warp's tile, chunk c
        const uint4 wv = *reinterpret_cast<const uint4*>(stage + G::kWeightOffset + at * mxmoe::tiling::kChunkBytes + lane * 16);
        Format::dequant(wv, stage + G::kScaleOffset + at * G::kChunkScaleBytes, lane, a[c]);
      }
      ptx::wgmma_fence();
#pragma unroll
      for (int step = 0; step < Ops::kStepsPerChunk; ++step) {
        const int i = c * Ops::kStepsPerChunk + step;
        const std::uint64_t desc = ptx::smem_desc_k128_swizzled(ptx::smem_addr(stage + G::kActOffset + (i / 4) * G::kSlabBytes));
        Ops::template wgmma_step<kAcc>(acc, a[c][step], desc + 2 * (i % 4));
      }
      ptx::wgmma_commit();
      ptx::wgmma_wait<1>();
    }
  }
  ptx::wgmma_wait<0>();
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    ptx::fence_operand(acc[i]);
    s += acc[i];
  }
  if (s == 12345.678f) sink[tid] = s;  // keeps the loop; never true for these data
}

template <class Format, int kN, int kWgs, bool kDequant>
void run(const char* name, int iterations, float* sink, int sms) {
  const int smem = gemm::WgmmaGeometryOf<CeilingCfg<kN, kWgs>, Format>::kSmemBytes;
  auto kernel = ceiling_kernel<Format, kN, kWgs, kDequant>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "shared memory size");
  cudaEvent_t e0, e1;
  check_cuda(cudaEventCreate(&e0), "cudaEventCreate");
  check_cuda(cudaEventCreate(&e1), "cudaEventCreate");
  kernel<<<sms, kWgs * 128, smem>>>(iterations / 10, sink);  // warm-up (clocks, caches)
  check_cuda(cudaGetLastError(), "cudaGetLastError");
  float best = 1e30f;
  for (int r = 0; r < 5; ++r) {
    check_cuda(cudaEventRecord(e0), "cudaEventRecord");
    kernel<<<sms, kWgs * 128, smem>>>(iterations, sink);
    check_cuda(cudaEventRecord(e1), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0.0f;
    check_cuda(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    if (ms < best) best = ms;
  }
  // Per iteration and warpgroup: two chunks of 64 K x 64 rows x kN columns.
  const double flop = 2.0 * 64 * kN * 128 * static_cast<double>(iterations) * kWgs * sms;
  std::printf("%-12s N=%-3d warpgroups=%d dequant=%-6s %8.1f TFLOP/s  (%.3f ms)\n", name, kN, kWgs, kDequant ? "format" : "none",
              flop / (best * 1e-3) / 1e12, best);
  check_cuda(cudaEventDestroy(e0), "cudaEventDestroy");
  check_cuda(cudaEventDestroy(e1), "cudaEventDestroy");
}

}  // namespace

int main(int argc, char** argv) try {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 20000;
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "cudaDeviceGetAttribute");
  mxmoe::DeviceBuffer sink_buffer(1024 * sizeof(float), "sink");
  float* sink = sink_buffer.as<float>();
  using gemm::Mxfp4;
  using gemm::Mxfp4E4m3;
  run<Mxfp4E4m3, 128, 1, false>("w4a8", iterations, sink, sms);
  run<Mxfp4E4m3, 128, 2, false>("w4a8", iterations, sink, sms);
  run<Mxfp4E4m3, 128, 3, false>("w4a8", iterations, sink, sms);
  run<Mxfp4E4m3, 128, 2, true>("w4a8", iterations, sink, sms);
  run<Mxfp4E4m3, 128, 3, true>("w4a8", iterations, sink, sms);
  run<Mxfp4E4m3, 64, 3, true>("w4a8", iterations, sink, sms);
  run<Mxfp4, 128, 2, false>("w4a16", iterations, sink, sms);
  run<Mxfp4, 128, 3, false>("w4a16", iterations, sink, sms);
  run<Mxfp4, 128, 2, true>("w4a16", iterations, sink, sms);
  run<Mxfp4, 128, 3, true>("w4a16", iterations, sink, sms);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mxmoe_wgmma_ceiling: %s\n", e.what());
  return 1;
}
