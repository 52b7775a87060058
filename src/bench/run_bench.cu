// One measured sweep: limits, then per token count the read floor, mxmoe and the bf16 baseline,
// all on the same hidden states and routing, all timed the same way.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bench/device_bench.hpp"
#include "bench/cuda_status.hpp"
#include "core/random.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/verify.hpp"

namespace mxmoe::bench {
namespace {

std::string fmt_us(double us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f us", us);
  return buf;
}

Limits limits_on(ReplayTimer& timer, const BenchConfig& config) {
  Limits limits;
  limits.copy_bytes = config.copy_bytes;
  const CopyLimits copy = measure_copy_gb_per_s(timer, config.copy_bytes);
  limits.copy_gb_per_s = copy.kernel_gb_per_s;
  limits.memcpy_gb_per_s = copy.memcpy_gb_per_s;
  limits.gemm_n = config.gemm_n;
  limits.gemm_tflop_per_s = measure_gemm_tflop_per_s(timer, config.gemm_n);
  return limits;
}

}  // namespace

Limits measure_limits(const BenchConfig& config) {
  const DeviceCheck device = check_hopper_device(config.device);
  if (!device.ok) fail(ErrorCode::Unsupported, "mxmoe bench needs a Hopper GPU: " + device.message);
  check(cudaSetDevice(config.device), "cudaSetDevice");
  ReplayTimer timer(config.timing);
  return limits_on(timer, config);
}

BenchRun run_bench(const BenchConfig& config, const std::function<void(const std::string&)>& progress) {
  config.shape.validate();
  config.activation.validate();
  if (config.tokens.empty()) fail(ErrorCode::InvalidArgument, "bench: no token counts to run");
  const DeviceCheck device = check_hopper_device(config.device);
  if (!device.ok) fail(ErrorCode::Unsupported, "mxmoe bench needs a Hopper GPU: " + device.message);
  check(cudaSetDevice(config.device), "cudaSetDevice");

  const LayerShape& shape = config.shape;
  const int max_tokens = *std::max_element(config.tokens.begin(), config.tokens.end());
  BenchRun run;
  Report& report = run.report;
  report.shape = shape;
  report.meta["device"] = device_description(config.device);
  report.meta["seed"] = std::to_string(config.seed);
  report.meta["skew"] = std::to_string(config.skew);
  report.meta["reps"] = std::to_string(config.timing.reps);
  report.meta["warmup"] = std::to_string(config.timing.warmup);
  report.meta["flush_bytes"] = std::to_string(config.timing.flush_bytes);
  report.meta["activation"] = activation_kind_name(config.activation.kind);
  report.meta["biases"] = config.biases ? "yes" : "no";
  report.meta["format"] = config.format.nvfp4() ? (config.format.activation_dtype == DType::F16 ? "nvfp4-f16" : "nvfp4")
                          : config.span_scales ? "mxfp4-span"
                          : config.wide_scales ? "mxfp4-wide"
                                               : "mxfp4";

  ReplayTimer timer(config.timing);
  if (config.limits) {
    report.limits = *config.limits;
  } else {
    progress("measuring the device copy bandwidth (copy kernel and cudaMemcpy) and the cuBLAS bf16 GEMM rate");
    report.limits = limits_on(timer, config);
  }

  // Inputs shared by every path.
  progress("generating synthetic weights, hidden states and routing");
  SyntheticSpec spec;
  spec.num_experts = shape.num_experts;
  spec.hidden = shape.hidden;
  spec.inter = shape.inter;
  spec.with_biases = config.biases;
  spec.with_router = false;
  spec.seed = config.seed;
  spec.format = config.format;
  CanonicalMoeWeights weights = make_synthetic_weights(spec);
  if ((config.wide_scales || config.span_scales) && !config.format.nvfp4()) {
    weights.w2_scale.mutable_as<std::uint8_t>()[0] = 200;                 // expert 0, row 0, group 0
    std::fill_n(weights.w2.mutable_as<std::uint8_t>(), 16, std::uint8_t{0});  // its 32 codes: zero
  }
  if (config.span_scales && !config.format.nvfp4()) {  // expert 0, row 0, group 1: a row spanning 200 > 128
    weights.w2_scale.mutable_as<std::uint8_t>()[1] = 0;
    std::fill_n(weights.w2.mutable_as<std::uint8_t>() + 16, 16, std::uint8_t{0});  // its 32 codes: zero
  }
  const std::vector<std::uint16_t> hidden =
      verify::random_hidden(max_tokens, shape.hidden, stream_seed(config.seed, 0x41c7ull), 1.0, config.format.activation_dtype);
  for (int t : config.tokens) run.routings.push_back(bench_routing(t, shape.num_experts, shape.top_k, config.skew, config.seed));

  std::vector<Work> works;
  std::int64_t max_read = 16;
  for (const TopK& r : run.routings) {
    works.push_back(row_work(shape, r.num_tokens, distinct_experts_hit(r, shape.num_experts), routed_pairs(r)));
    max_read = std::max(max_read, works.back().read_bytes);
  }

  const std::size_t io_tokens = static_cast<std::size_t>(max_tokens);
  DeviceBuffer d_hidden(io_tokens * shape.hidden * 2, "hidden states");
  d_hidden.upload(hidden.data(), hidden.size() * 2);
  DeviceBuffer d_ids(io_tokens * shape.top_k * 4, "topk ids"), d_weights(io_tokens * shape.top_k * 4, "topk weights");
  DeviceBuffer d_out_mx(io_tokens * shape.hidden * 2, "mxmoe output"), d_out_bf16(io_tokens * shape.hidden * 2, "bf16 output");
  DeviceBuffer d_read((static_cast<std::size_t>(max_read) + 15) / 16 * 16, "the read-floor buffer");
  check(cudaMemset(d_read.as(), 0, d_read.bytes()), "memset");

  // mxmoe's layer; if it cannot be built the sweep still measures the floor and the baseline.
  std::unique_ptr<MoeLayer> layer;
  std::string layer_error;
  progress("preparing the mxmoe layer");
  try {
    MoeLayerOptions options;
    options.max_tokens = max_tokens;
    options.top_k = shape.top_k;
    options.activation = config.activation;
    options.device = config.device;
    options.gemm_tile = config.gemm_tile;
    options.batch_invariant = config.batch_invariant;
    options.activation_precision = config.activation_precision;
    const auto t0 = std::chrono::steady_clock::now();
    layer = std::make_unique<MoeLayer>(weights, options);
    check(cudaDeviceSynchronize(), "layer preparation");
    report.prepare_wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    report.prepare_ms = layer->prepare_ms();
    report.meta["gemm_format"] = layer->gemm_format();  // the kernels' format the layer picked
    report.meta["gemm_tile"] = gemm_tile_name(config.gemm_tile);
    report.meta["batch_invariant"] = config.batch_invariant ? "yes" : "no";
    report.meta["act"] = activation_precision_name(config.activation_precision);
    if (config.activation_precision == ActivationPrecision::Fp8PerToken) {
      const W4a8FoldReport fold = layer->w4a8_fold();
      report.meta["w4a8_fold"] = "w13 " + describe_fold(fold.w13) + "; w2 " + describe_fold(fold.w2);
    }
  } catch (const Error& e) {
    layer_error = std::string("MoeLayer could not be created: ") + e.what();
    report.meta["mxmoe_error"] = layer_error;
    progress(layer_error);
  }

  std::unique_ptr<Bf16Baseline> baseline;
  std::string baseline_error = "not run (--no-bf16)";
  if (config.run_bf16 && config.format.nvfp4()) {
    baseline_error = "the bf16 baseline dequantises MXFP4 only";
  } else if (config.run_bf16) {
    progress("dequantising the layer to bf16 for the cuBLAS baseline");
    std::size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const std::size_t margin = std::size_t(2) << 30;
    try {
      if (free_bytes <= margin) fail(ErrorCode::Unsupported, "bf16 baseline: less than 2 GiB of GPU memory left");
      baseline = std::make_unique<Bf16Baseline>(weights, config.activation, shape.top_k, max_tokens, free_bytes - margin);
      report.meta["bf16_resident_experts"] = std::to_string(baseline->resident_capacity());
    } catch (const Error& e) {
      baseline_error = e.what();
      progress(baseline_error);
    }
  }

  const std::size_t n_rows = config.tokens.size();
  for (std::size_t i = 0; i < n_rows; ++i) {
    const TopK& r = run.routings[i];
    const int T = r.num_tokens;
    Row row;
    row.work = works[i];
    row.expected_hit = expected_experts_hit(shape.num_experts, shape.top_k, T);
    const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(n_rows) + "] T=" + std::to_string(T);
    progress(tag + ": read floor");
    row.read_floor_us = timer.median_us([&](cudaStream_t s) { enqueue_stream_read(d_read.as(), row.work.read_bytes, s); });
    std::string line = tag + ": hit " + std::to_string(row.work.experts_hit) + ", floor " + fmt_us(row.read_floor_us);

    d_ids.upload(r.ids.data(), r.ids.size() * 4);
    d_weights.upload(r.weights.data(), r.weights.size() * 4);
    if (layer) {
      progress(tag + ": mxmoe");
      try {
        row.path_us["mxmoe"] = timer.median_us([&](cudaStream_t s) {
          layer->forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_weights.as<float>(), d_out_mx.as(), T, s);
        });
        line += ", mxmoe " + fmt_us(row.path_us["mxmoe"]);
        row.mxmoe_gemm = layer->gemm_plan_for(T);
      } catch (const Error& e) {
        row.path_note["mxmoe"] = e.what();
        check(cudaDeviceSynchronize(), "after a failed mxmoe forward");
      }
    } else {
      row.path_note["mxmoe"] = layer_error;
    }

    if (baseline) {
      progress(tag + ": cuBLAS bf16");
      std::string why_not;
      if (baseline->set_routing(r, &why_not)) {
        row.path_us["cublas_bf16"] =
            timer.median_us([&](cudaStream_t s) { baseline->forward(d_hidden.as(), d_out_bf16.as(), s); });
        line += ", cuBLAS bf16 " + fmt_us(row.path_us["cublas_bf16"]);
      } else {
        row.path_note["cublas_bf16"] = why_not;
      }
    } else {
      row.path_note["cublas_bf16"] = baseline_error;
    }

    if (row.path_us.count("mxmoe") && row.path_us.count("cublas_bf16")) {
      std::vector<std::uint16_t> a(static_cast<std::size_t>(T) * shape.hidden), b(a.size());
      d_out_mx.download(a.data(), a.size() * 2);
      d_out_bf16.download(b.data(), b.size() * 2);
      const verify::Comparison c = verify::compare(a, b);
      row.rel_err_vs_bf16 = c.relative_error;
      if (!c.finite) {
        row.path_note["mxmoe"] = "the mxmoe or the cuBLAS output holds NaN or Inf";
        row.rel_err_vs_bf16 = -1.0;
      }
    }
    progress(line);
    report.rows.push_back(row);
  }
  check(cudaDeviceSynchronize(), "the sweep");
  return run;  // buffers, layer and baseline are freed here
}

}  // namespace mxmoe::bench
