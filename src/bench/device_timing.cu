// Device buffers, the graph-replay timer with L2 flushes, and the card's limits: streaming read,
// device copy and cuBLAS bf16 GEMM.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "bench/device_bench.hpp"
#include "bench/cuda_status.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {
namespace {

// Four independent 16-byte loads in flight per thread per step; the xor keeps them live and the
// store happens only on a value the data never produces here (the buffer is memset to zero).
__global__ void stream_read_kernel(const uint4* __restrict__ src, std::int64_t n, unsigned* sink) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldg(src + i), b = __ldg(src + i + stride), c = __ldg(src + i + 2 * stride),
                d = __ldg(src + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldg(src + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

// The copy limit: one 16-byte vector per thread per step, grid-stride. Launched with enough CTAs to
// cover the buffer in one pass (each thread copies one vector): measured on an H200, that reaches
// what an eager cudaMemcpy does (~4260 GB/s), where a grid of one wave looping over the buffer (four
// vectors in flight per thread, any CTA size) stays at ~3950 and a graph-captured cudaMemcpy at ~2760.
__global__ void copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = __ldg(src + i);
}

int sm_count() {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  return sms;
}

}  // namespace

struct ReplayTimer::Impl {
  TimingOptions options;
  cudaStream_t stream = nullptr;
  DeviceBuffer flush;
  std::vector<cudaEvent_t> starts, stops;
};

ReplayTimer::ReplayTimer(const TimingOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.reps < 1 || options.warmup < 0)
    fail(ErrorCode::InvalidArgument, "bench timer: need reps >= 1 and warmup >= 0, got reps=" + std::to_string(options.reps) +
                                         " warmup=" + std::to_string(options.warmup));
  impl_->options = options;
  check(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  impl_->flush = DeviceBuffer(options.flush_bytes, "the L2 flush buffer");
  impl_->starts.resize(options.reps);
  impl_->stops.resize(options.reps);
  for (int i = 0; i < options.reps; ++i) {
    check(cudaEventCreate(&impl_->starts[i]), "cudaEventCreate");
    check(cudaEventCreate(&impl_->stops[i]), "cudaEventCreate");
  }
}

ReplayTimer::~ReplayTimer() {
  for (auto e : impl_->starts) cudaEventDestroy(e);
  for (auto e : impl_->stops) cudaEventDestroy(e);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

cudaStream_t ReplayTimer::stream() const { return impl_->stream; }
const TimingOptions& ReplayTimer::options() const { return impl_->options; }

double ReplayTimer::median_us(const std::function<void(cudaStream_t)>& body) {
  cudaStream_t s = impl_->stream;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  // One eager run first: lazily loaded kernels and library heuristics settle outside the capture.
  body(s);
  check(cudaStreamSynchronize(s), "the eager run before capture");
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    body(s);
  } catch (...) {
    cudaStreamEndCapture(s, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  check(cudaStreamEndCapture(s, &graph), "capturing the timed work into a CUDA graph");
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(inst, "cudaGraphInstantiate");
  std::vector<double> us(impl_->options.reps);
  try {
    for (int i = 0; i < impl_->options.warmup; ++i) check(cudaGraphLaunch(exec, s), "graph launch (warm-up)");
    for (int i = 0; i < impl_->options.reps; ++i) {
      if (impl_->options.flush_bytes)
        check(cudaMemsetAsync(impl_->flush.as(), i & 0xff, impl_->options.flush_bytes, s), "L2 flush");
      check(cudaEventRecord(impl_->starts[i], s), "cudaEventRecord");
      check(cudaGraphLaunch(exec, s), "graph launch");
      check(cudaEventRecord(impl_->stops[i], s), "cudaEventRecord");
    }
    check(cudaStreamSynchronize(s), "the timed replays");
    for (int i = 0; i < impl_->options.reps; ++i) {
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, impl_->starts[i], impl_->stops[i]), "cudaEventElapsedTime");
      us[i] = 1000.0 * ms;
    }
  } catch (...) {
    cudaGraphExecDestroy(exec);
    throw;
  }
  cudaGraphExecDestroy(exec);
  return median(us);
}

void enqueue_stream_read(const void* src, std::int64_t bytes, cudaStream_t stream) {
  static const int sms = sm_count();
  const std::int64_t n16 = (bytes + 15) / 16;
  constexpr int kThreads = 512;
  const std::int64_t wanted = (n16 + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 4ll * sms ? wanted : 4ll * sms);  // 2048 threads per SM
  stream_read_kernel<<<blocks > 0 ? blocks : 1, kThreads, 0, stream>>>(static_cast<const uint4*>(src), n16,
                                                                         static_cast<unsigned*>(const_cast<void*>(src)));
  check(cudaGetLastError(), "stream read launch");
}

void enqueue_copy(const void* src, void* dst, std::int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0 || bytes % 16 != 0)
    fail(ErrorCode::InvalidArgument, "bench copy: the size must be a positive multiple of 16 bytes, got " + std::to_string(bytes));
  constexpr int kThreads = 256;
  const std::int64_t n16 = bytes / 16;
  const std::int64_t wanted = (n16 + kThreads - 1) / kThreads, most = 0x7fffffff;
  const int blocks = static_cast<int>(wanted < most ? wanted : most);  // one pass: a vector per thread
  copy_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint4*>(src), static_cast<uint4*>(dst), n16);
  check(cudaGetLastError(), "copy kernel launch");
}

CopyLimits measure_copy_gb_per_s(ReplayTimer& timer, std::int64_t bytes) {
  if (bytes <= 0 || bytes % 16 != 0)
    fail(ErrorCode::InvalidArgument, "bench copy: the size must be a positive multiple of 16 bytes, got " + std::to_string(bytes));
  DeviceBuffer a(static_cast<std::size_t>(bytes), "the copy-bandwidth source"), b(static_cast<std::size_t>(bytes), "the copy-bandwidth target");
  check(cudaMemset(a.as(), 1, a.bytes()), "memset");
  check(cudaMemset(b.as(), 0, b.bytes()), "memset");
  CopyLimits out;
  const double kernel_us = timer.median_us([&](cudaStream_t s) { enqueue_copy(a.as(), b.as(), bytes, s); });
  out.kernel_gb_per_s = gb_per_s(2.0 * static_cast<double>(bytes), kernel_us);
  // The kernel must have copied: its start, middle and end hold the source's bytes (a broken copy
  // would report a meaningless limit).
  const std::int64_t probe = bytes < 4096 ? bytes : 4096;
  std::vector<unsigned char> host(static_cast<std::size_t>(probe));
  for (const std::int64_t at : {std::int64_t(0), (bytes / 2) / 16 * 16, bytes - probe}) {
    check(cudaMemcpy(host.data(), static_cast<const char*>(b.as()) + at, host.size(), cudaMemcpyDeviceToHost), "copy check");
    for (std::size_t i = 0; i < host.size(); ++i)
      if (host[i] != 1)
        fail(ErrorCode::Cuda, "bench: the copy kernel did not copy: byte " + std::to_string(at + static_cast<std::int64_t>(i)) +
                                  " of the target is " + std::to_string(host[i]) + ", expected 1");
  }
  const double memcpy_us = timer.median_us([&](cudaStream_t s) {
    check(cudaMemcpyAsync(b.as(), a.as(), static_cast<std::size_t>(bytes), cudaMemcpyDeviceToDevice, s), "copy");
  });
  out.memcpy_gb_per_s = gb_per_s(2.0 * static_cast<double>(bytes), memcpy_us);
  return out;
}

double measure_gemm_tflop_per_s(ReplayTimer& timer, int n) {
  if (n < 256 || n % 256 != 0) fail(ErrorCode::InvalidArgument, "bench: GEMM size must be a multiple of 256, got " + std::to_string(n));
  const std::size_t elems = static_cast<std::size_t>(n) * n;
  DeviceBuffer a(elems * 2, "GEMM A"), b(elems * 2, "GEMM B"), c(elems * 2, "GEMM C"), ws(64u << 20, "cuBLAS workspace");
  check(cudaMemset(a.as(), 0x3c, a.bytes()), "memset");  // bf16 0x3c3c: about 0.0115, no overflow
  check(cudaMemset(b.as(), 0x3c, b.bytes()), "memset");
  cublasHandle_t handle = nullptr;
  check_cublas(cublasCreate(&handle), "cublasCreate");
  double us = 0.0;
  try {
    check_cublas(cublasSetWorkspace(handle, ws.as(), ws.bytes()), "cublasSetWorkspace");
    const float alpha = 1.0f, beta = 0.0f;
    us = timer.median_us([&](cudaStream_t s) {
      check_cublas(cublasSetStream(handle, s), "cublasSetStream");
      check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.as(), CUDA_R_16BF, n, b.as(),
                                CUDA_R_16BF, n, &beta, c.as(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx (rate)");
    });
  } catch (...) {
    cublasDestroy(handle);
    throw;
  }
  cublasDestroy(handle);
  return tflop_per_s(2.0 * n * static_cast<double>(n) * n, us);
}

std::string device_description(int device) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  return std::string(p.name) + ", " + std::to_string(p.multiProcessorCount) + " SMs, L2 " +
         std::to_string(p.l2CacheSize >> 20) + " MiB, " + std::to_string(p.totalGlobalMem >> 30) + " GiB, CUDA runtime " +
         ver(runtime) + ", driver " + ver(driver) + ", cuBLAS " + std::to_string(major) + "." + std::to_string(minor) +
         "." + std::to_string(patch);
}

}  // namespace mxmoe::bench
