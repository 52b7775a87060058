// `mxmoe demo`: one MoE layer shaped like a real model (DeepSeek-V4-Flash by default), synthetic
// MXFP4 weights, random bf16 hidden states routed by the layer's router; run on the Hopper GPU when
// there is one (checked against the CPU oracle), else on the CPU oracle (checked against float64).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"
#include "host_memory.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/presets.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "mxmoe/weights.hpp"

#ifdef MXMOE_HAVE_CUDA
#include <cuda_runtime.h>

#include "mxmoe/device_buffer.hpp"
#endif

namespace mxmoe::cli {
namespace {

constexpr double kCpuCheckLimit = 1e-2;  // fp32 oracle vs float64: bf16 rounding of a and of out
constexpr double kGpuCheckLimit = 2e-2;  // GPU vs fp32 oracle: the same roundings, other sum orders
constexpr int kCpuDefaultExperts = 16, kCpuDefaultTokens = 16, kCpuDefaultCheck = 3;
constexpr int kGpuDefaultTokens = 64, kGpuDefaultCheck = 4;
constexpr int kGpuWarmup = 3, kGpuTimedRuns = 20;

struct DemoOptions {
  std::string preset = "dsv4-flash", backend = "auto";
  int hidden = 0, inter = 0, experts = 0, topk = 0, tokens = 0, threads = 0, check_tokens = 0;
  std::uint64_t seed = 1;
  // Which of the options whose default depends on the preset or the backend were given.
  bool hidden_given = false, inter_given = false, experts_given = false, topk_given = false, tokens_given = false,
       check_given = false;
};

// The layer and the batch the demo runs, after the preset, the backend's defaults and the overrides.
struct Problem {
  ModelPreset layer;
  int preset_experts = 0;
  int tokens = 0, check_tokens = 0;
};

Problem make_problem(const DemoOptions& o, bool gpu) {
  Problem p;
  p.layer = find_preset(o.preset);
  p.preset_experts = p.layer.num_experts;
  if (o.hidden_given) p.layer.hidden = o.hidden;
  if (o.inter_given) p.layer.inter = o.inter;
  if (o.experts_given) p.layer.num_experts = o.experts;
  else if (!gpu) p.layer.num_experts = std::min(kCpuDefaultExperts, p.layer.num_experts);
  if (o.topk_given) p.layer.top_k = o.topk;
  else p.layer.top_k = std::min(p.layer.top_k, p.layer.num_experts);
  p.layer.routing.top_k = p.layer.top_k;
  p.tokens = o.tokens_given ? o.tokens : (gpu ? kGpuDefaultTokens : kCpuDefaultTokens);
  p.check_tokens = o.check_given ? o.check_tokens : (gpu ? kGpuDefaultCheck : kCpuDefaultCheck);
  if (p.tokens < 1) fail(ErrorCode::InvalidArgument, "demo: --tokens must be >= 1, got " + std::to_string(p.tokens));
  if (p.check_tokens < 1) fail(ErrorCode::InvalidArgument, "demo: --check-tokens must be >= 1, got " + std::to_string(p.check_tokens));
  if (o.threads < 0) fail(ErrorCode::InvalidArgument, "demo: --threads must be >= 0, got " + std::to_string(o.threads));
  p.check_tokens = std::min(p.check_tokens, p.tokens);
  p.layer.routing.validate(p.layer.num_experts);
  p.layer.activation.validate();
  // Host memory, checked before anything is allocated (tools/host_memory.hpp): per token the bf16
  // hidden and output, fp32 logits, top-k, and the oracle's fp32 intermediates; plus the MXFP4 weights.
  const double H = p.layer.hidden, I = p.layer.inter, E = p.layer.num_experts, k = p.layer.top_k;
  check_host_bytes((4 * H + 4 * E + 8 * k + 4 * k * (2 * I + H)) * p.tokens + E * 3 * I * H * (0.5 + 1.0 / 32),
                   "demo: --tokens " + std::to_string(p.tokens) + " on H=" + std::to_string(p.layer.hidden) + " I=" +
                       std::to_string(p.layer.inter) + " E=" + std::to_string(p.layer.num_experts));
  return p;
}

std::string describe(const Problem& p, std::uint64_t seed) {
  const ModelPreset& l = p.layer;
  std::ostringstream s;
  s << "problem: '" << l.name << "'-shaped layer, H=" << l.hidden << " I=" << l.inter << " E=" << l.num_experts;
  if (l.num_experts != p.preset_experts) s << " (the preset has " << p.preset_experts << ")";
  s << " top-" << l.top_k << "\n  routing " << routing_mode_name(l.routing.mode);
  if (l.routing.n_groups > 1) s << ", " << l.routing.n_groups << " groups keep " << l.routing.topk_groups;
  s << ", weights x" << l.routing.routed_scaling << "; activation " << activation_kind_name(l.activation.kind);
  if (l.activation.kind != ActivationKind::SiluMul) s << " (limit " << l.activation.limit << ")";
  s << "; expert biases " << (l.biases ? "yes" : "no") << "\n  " << p.tokens << " tokens of random bf16 hidden states, seed "
    << seed << "\n";
  return s.str();
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s;
}

// Prints the check line; returns the exit status (0 pass, 1 fail).
int report_check(const std::string& what, const std::vector<int>& rows, double err, double limit) {
  const bool pass = err < limit;  // false for NaN
  std::cout << "check: " << rows.size() << " tokens [" << join(rows) << "] against " << what << ": relative Frobenius error "
            << std::scientific << std::setprecision(3) << err << " (limit " << limit << "): " << (pass ? "PASS" : "FAIL")
            << std::defaultfloat << "\n";
  return pass ? 0 : 1;
}

struct Inputs {
  CanonicalMoeWeights weights;
  std::vector<std::uint16_t> hidden;
  TopK topk;
};

Inputs make_inputs(const Problem& p, std::uint64_t seed) {
  const auto t0 = std::chrono::steady_clock::now();
  SyntheticSpec spec;
  spec.num_experts = p.layer.num_experts;
  spec.hidden = p.layer.hidden;
  spec.inter = p.layer.inter;
  spec.with_biases = p.layer.biases;
  spec.with_router = true;
  spec.seed = seed;
  Inputs in;
  in.weights = make_synthetic_weights(spec);
  in.hidden = verify::random_hidden(p.tokens, p.layer.hidden, seed);
  const std::vector<float> logits = reference::router_logits(in.weights, in.hidden.data(), p.tokens);
  in.topk = reference::route(logits.data(), p.tokens, p.layer.num_experts, p.layer.routing, in.weights.correction_bias->as<float>());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mb = static_cast<double>(in.weights.expert_weight_bytes()) * p.layer.num_experts / 1e6;
  std::cout << "weights: synthetic MXFP4, " << std::fixed << std::setprecision(1) << mb << " MB; inputs made and routed in "
            << std::setprecision(2) << s << " s\n" << std::defaultfloat;
  return in;
}

int run_cpu(const DemoOptions& o) {
  const Problem p = make_problem(o, false);
  std::cout << describe(p, o.seed);
  const Inputs in = make_inputs(p, o.seed);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::uint16_t> out =
      reference::moe_forward(in.weights, in.hidden.data(), p.tokens, in.topk, p.layer.activation, o.threads);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "backend cpu-reference: " << p.tokens << " tokens in " << std::fixed << std::setprecision(3) << s << " s -> "
            << std::setprecision(1) << p.tokens / s << " tokens/s\n" << std::defaultfloat;
  const std::vector<int> rows = verify::spread_rows(p.tokens, p.check_tokens);
  const std::vector<double> want =
      reference::moe_forward_f64(in.weights, in.hidden.data(), p.tokens, in.topk, p.layer.activation, rows, o.threads);
  return report_check("a float64 recomputation", rows, verify::relative_error(verify::take_rows(out, p.layer.hidden, rows), want),
                      kCpuCheckLimit);
}

#ifdef MXMOE_HAVE_CUDA
int run_gpu(const DemoOptions& o, const std::string& device) {
  const Problem p = make_problem(o, true);
  std::cout << "backend gpu: " << device << "\n" << describe(p, o.seed);
  const Inputs in = make_inputs(p, o.seed);
  const int T = p.tokens, H = p.layer.hidden, k = p.layer.top_k;

  MoeLayerOptions lo;
  lo.max_tokens = T;
  lo.top_k = k;
  lo.activation = p.layer.activation;
  MoeLayer layer(in.weights, lo);
  std::cout << "layer: prepared in " << layer.prepare_ms() << " ms, " << layer.device_bytes() / 1e6 << " MB on the device\n";

  const DeviceBuffer d_hidden = DeviceBuffer::from_host(in.hidden, "demo: hidden states");
  const DeviceBuffer d_ids = DeviceBuffer::from_host(in.topk.ids, "demo: top-k ids");
  const DeviceBuffer d_weights = DeviceBuffer::from_host(in.topk.weights, "demo: top-k weights");
  const DeviceBuffer d_out(static_cast<std::size_t>(T) * H * 2, "demo: output");
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> stream_guard(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
  cudaEvent_t start = nullptr, stop = nullptr;
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  std::unique_ptr<CUevent_st, void (*)(cudaEvent_t)> start_guard(start, [](cudaEvent_t e) { cudaEventDestroy(e); });
  check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  std::unique_ptr<CUevent_st, void (*)(cudaEvent_t)> stop_guard(stop, [](cudaEvent_t e) { cudaEventDestroy(e); });

  auto run_once = [&] {
    layer.forward(d_hidden.as(), d_ids.as<const std::int32_t>(), d_weights.as<const float>(), d_out.as(), T, stream);
    check_cuda(cudaGetLastError(), "MoeLayer::forward launch");
  };
  for (int i = 0; i < kGpuWarmup; ++i) run_once();
  check_cuda(cudaStreamSynchronize(stream), "warm-up forward");
  std::vector<float> ms(kGpuTimedRuns);
  for (float& m : ms) {
    check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    run_once();
    check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "timed forward");
    check_cuda(cudaEventElapsedTime(&m, start, stop), "cudaEventElapsedTime");
  }
  std::sort(ms.begin(), ms.end());
  const double median_ms = ms[ms.size() / 2];
  const std::vector<std::uint16_t> out = d_out.to_host<std::uint16_t>();
  std::cout << "forward: " << T << " tokens, median of " << kGpuTimedRuns << " runs " << std::fixed << std::setprecision(1)
            << median_ms * 1e3 << " us -> " << std::setprecision(0) << T / (median_ms * 1e-3) << " tokens/s\n" << std::defaultfloat;

  // The oracle on the checked tokens only: it costs seconds per token at full size.
  const std::vector<int> rows = verify::spread_rows(T, p.check_tokens);
  const std::vector<std::uint16_t> sub_hidden = verify::take_rows(in.hidden, H, rows);
  const std::vector<std::uint16_t> want = reference::moe_forward(in.weights, sub_hidden.data(), static_cast<int>(rows.size()),
                                                                 verify::take_rows(in.topk, rows), p.layer.activation, o.threads);
  const double err = verify::relative_error(verify::take_rows(out, H, rows), want);
  return report_check("the CPU reference (reference::moe_forward)", rows, err, kGpuCheckLimit);
}
#endif

int run_demo(const DemoOptions& o) {
  find_preset(o.preset);  // an unknown name fails here, before any work, listing the known ones
  if (o.backend != "auto" && o.backend != "cpu" && o.backend != "gpu")
    fail(ErrorCode::InvalidArgument, "demo: --backend must be auto, cpu or gpu, got '" + o.backend + "'");
  if (o.backend == "cpu") {
    std::cout << "backend: CPU reference (asked for with --backend cpu)\n";
    return run_cpu(o);
  }
  const DeviceCheck dev = check_hopper_device();
  if (!dev.ok) {
    if (o.backend == "gpu") fail(ErrorCode::Unsupported, "demo: --backend gpu needs a Hopper GPU: " + dev.message);
    std::cout << "no Hopper GPU: " << dev.message << "; running the CPU reference backend\n";
    return run_cpu(o);
  }
#ifdef MXMOE_HAVE_CUDA
  return run_gpu(o, dev.message);
#else
  fail(ErrorCode::Unsupported, "demo: this build has no CUDA backend");
#endif
}

const char* kFooter =
    "\nThe problem: one routed-experts MoE layer shaped like the preset (default dsv4-flash: DeepSeek-V4-Flash,\n"
    "H=4096, I=2048, 256 experts, top-6, sqrt-softplus routing with correction bias, weights x1.5, SiLU-and-mul\n"
    "clamped at 10), with synthetic MXFP4 expert weights (E2M1 + one E8M0 scale per 32) from a fixed seed, random\n"
    "bf16 hidden states, and router logits from the layer's synthetic router, routed by the preset's rule.\n"
    "\nBackends:\n"
    "  gpu  the fused Hopper layer (MoeLayer) on the full preset, --tokens tokens (default 64): median of CUDA-event\n"
    "       timed runs after a warm-up; a few tokens (default 4) are checked against the CPU reference\n"
    "       (relative Frobenius error < 2e-2).\n"
    "  cpu  the CPU reference (fp32 oracle) on a reduced problem: the preset's H and I, 16 experts and 16 tokens\n"
    "       unless given; a few tokens (default 3) are checked against a float64 recomputation (error < 1e-2).\n"
    "  auto (default) gpu when a Hopper GPU (compute capability 9.0) is present, else cpu, saying why.\n"
    "\nExit status: 0 when the check passes, 1 when it fails, 2 on bad options or when --backend gpu has no GPU.\n";

const RegisterCommand kDemo("demo", "run a DeepSeek-V4-Flash-shaped MoE layer (GPU, or the CPU reference) and check it", 10,
                            [](CLI::App& sub) -> std::function<int()> {
  auto o = std::make_shared<DemoOptions>();
  sub.footer(kFooter);
  std::string presets;
  for (const auto& p : model_presets()) presets += (presets.empty() ? "" : ", ") + p.name;
  sub.add_option("--preset", o->preset, "model shape, routing and activation: " + presets)->capture_default_str();
  sub.add_option("--backend", o->backend, "auto | cpu | gpu (see below)")->capture_default_str();
  std::vector<std::pair<CLI::Option*, bool*>> given = {
      {sub.add_option("--hidden", o->hidden, "override H (a multiple of 32)"), &o->hidden_given},
      {sub.add_option("--inter", o->inter, "override I, the expert intermediate size (a multiple of 32)"), &o->inter_given},
      {sub.add_option("--experts", o->experts, "override E, the expert count (cpu default: 16)"), &o->experts_given},
      {sub.add_option("--topk", o->topk, "override k, the experts per token (default: the preset's, at most E)"), &o->topk_given},
      {sub.add_option("--tokens", o->tokens, "tokens in the batch (default: 64 on the gpu, 16 on the cpu)"), &o->tokens_given},
      {sub.add_option("--check-tokens", o->check_tokens, "tokens checked (default: 4 on the gpu, 3 on the cpu)"), &o->check_given},
  };
  sub.add_option("--seed", o->seed, "seed of the synthetic weights and hidden states")->capture_default_str();
  sub.add_option("--threads", o->threads, "CPU threads for the reference (0: all cores)")->capture_default_str();
  return [o, given] {
    for (const auto& [option, flag] : given) *flag = option->count() > 0;
    return run_demo(*o);
  };
});

}  // namespace
}  // namespace mxmoe::cli
