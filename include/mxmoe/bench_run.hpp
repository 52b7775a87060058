// The measured sweep behind `mxmoe bench` (defined in CUDA builds only; src/bench/run_bench.cu):
// limits, then per token count the read floor, mxmoe's forward and the cuBLAS bf16 baseline, all
// on the same inputs and timed the same way. The report it returns is mxmoe/bench.hpp's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "mxmoe/bench.hpp"
#include "mxmoe/config.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"

namespace mxmoe::bench {

struct TimingOptions {
  int warmup = 10;                       // untimed replays first
  int reps = 100;                        // timed replays; the median is reported
  std::size_t flush_bytes = 256u << 20;  // written before every replay (H100 L2: 50 MB)
};

// What a sweep runs on.
struct BenchConfig {
  LayerShape shape;
  ActivationConfig activation;
  bool biases = false;
  std::vector<int> tokens;
  double skew = 0.0;
  std::uint64_t seed = 1;
  TimingOptions timing;
  bool run_bf16 = true;
  int gemm_n = 8192;
  std::int64_t copy_bytes = std::int64_t(1) << 30;
  int device = 0;
  GemmTile gemm_tile = GemmTile::Auto;
  bool batch_invariant = false;  // MoeLayerOptions::batch_invariant
  ActivationPrecision activation_precision = ActivationPrecision::Bf16;  // MoeLayerOptions::activation_precision (--act)
  WeightFormat format;  // MXFP4 (bf16) or NVFP4 with bf16 / fp16 activations; shape.group follows it
  // MXFP4 only: one E8M0 byte (200) above 128 in expert 0's w2 (over a block of zero codes, so the
  // values do not change), which makes the layer run Mxfp4Shifted (a per-row shift, 2^d in the
  // epilogue). span_scales adds byte 0 in the same row (over zero codes too): a span above 128,
  // the pathological case that runs the two-multiply format (Mxfp4Wide), so it can still be timed.
  bool wide_scales = false;
  bool span_scales = false;
  // Limits measured already (a shape sweep measures them once, before its first shape); empty:
  // measure the copy and GEMM limits first.
  std::optional<Limits> limits;
};

// The copy and GEMM limits alone (what run_bench measures first), on a timer of its own.
// Throws mxmoe::Error (Unsupported) when no Hopper GPU is present.
Limits measure_limits(const BenchConfig& config);

struct BenchRun {
  Report report;
  std::vector<TopK> routings;  // one per row, in row order
};

// Measures the limits, then for every token count the read floor, mxmoe's MoeLayer::forward and
// the cuBLAS bf16 baseline on the same inputs. `progress` is told what is being measured.
// Throws mxmoe::Error (Unsupported) when no Hopper GPU is present. Frees all device memory before
// returning, so a baseline in another process can use the card next.
BenchRun run_bench(const BenchConfig& config, const std::function<void(const std::string&)>& progress);

}  // namespace mxmoe::bench
