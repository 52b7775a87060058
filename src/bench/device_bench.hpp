// The GPU side of `mxmoe bench` (CUDA builds only): the timer, the card's limits and the cuBLAS bf16
// baseline behind the measured sweep of mxmoe/bench_run.hpp. Library code: returns data, never prints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mxmoe/bench.hpp"
#include "mxmoe/bench_run.hpp"
#include "mxmoe/config.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/weights.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace mxmoe::bench {

// Captures the work `body` enqueues into a CUDA graph and replays it: `warmup` untimed replays,
// then `reps` replays, each preceded by an L2 flush (a memset of flush_bytes) that lies outside
// that replay's pair of CUDA events. Returns the median replay time in microseconds.
class ReplayTimer {
 public:
  explicit ReplayTimer(const TimingOptions& options);
  ~ReplayTimer();
  ReplayTimer(const ReplayTimer&) = delete;
  ReplayTimer& operator=(const ReplayTimer&) = delete;

  cudaStream_t stream() const;
  double median_us(const std::function<void(cudaStream_t)>& body);
  const TimingOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One streaming read of `bytes` bytes from `src` (16-byte loads, grid-stride, nothing written).
void enqueue_stream_read(const void* src, std::int64_t bytes, cudaStream_t stream);

// Copy of `bytes` (a positive multiple of 16) from src to dst by the bench's copy kernel (16-byte
// loads and stores, 256-thread CTAs enough to cover the buffer in one pass, a vector per thread;
// grid-stride beyond 2^31-1 CTAs); graph-capturable.
void enqueue_copy(const void* src, void* dst, std::int64_t bytes, cudaStream_t stream);

// Device-to-device copy of `bytes`, counted as read + write: 2 * bytes / time, timed twice: by the
// copy kernel (the limit the bench reports) and as one graph-captured cudaMemcpyAsync (the figure
// the bench reported before, kept for comparison with older records).
struct CopyLimits {
  double kernel_gb_per_s = 0.0, memcpy_gb_per_s = 0.0;
};
CopyLimits measure_copy_gb_per_s(ReplayTimer& timer, std::int64_t bytes);
// cuBLAS bf16 GEMM n x n x n (fp32 accumulate, bf16 out): 2 n^3 / time.
double measure_gemm_tflop_per_s(ReplayTimer& timer, int n);

// Name, SMs, L2, memory, CUDA runtime/driver and cuBLAS versions, one line.
std::string device_description(int device);

// The path a user without W4A16 kernels would take: the layer's MXFP4 weights dequantised once to
// bf16 on the GPU, then per expert hit two cublasGemmEx calls over the tokens routed to it
// (gathered, sorted by expert), the activation in between, and a weighted combine. When the bf16
// copy of all experts does not fit in `memory_budget` bytes, only as many experts as fit are kept
// and re-dequantised (untimed) per row; a row hitting more than that is refused by set_routing.
class Bf16Baseline {
 public:
  Bf16Baseline(const CanonicalMoeWeights& weights, const ActivationConfig& activation, int top_k, int max_tokens,
               std::size_t memory_budget);
  ~Bf16Baseline();
  Bf16Baseline(const Bf16Baseline&) = delete;
  Bf16Baseline& operator=(const Bf16Baseline&) = delete;

  int resident_capacity() const;  // experts whose bf16 weights fit at once
  // Prepares a forward for this routing (host-side grouping, upload, missing experts dequantised;
  // synchronises). Returns false with *why_not set when the experts hit do not fit.
  bool set_routing(const TopK& topk, std::string* why_not);
  // hidden bf16 [T, H], out bf16 [T, H], T = the routing's token count; graph-capturable.
  void forward(const void* hidden, void* out, cudaStream_t stream) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mxmoe::bench
