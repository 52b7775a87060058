// mxmoe verify: runs one MoE layer of a checkpoint on random tokens with the best backend available
// and checks it: the GPU layer against the CPU oracle, or (without a Hopper GPU) the CPU oracle
// against the float64 reference (reference::moe_forward_f64) of a few tokens. With --source it also
// reports the quantisation error against the unquantized layer. With --act fp8 (W4A8, issue 14) it
// runs the CPU oracle's FP8 per-token mode instead and reports its error against the W4A16 oracle
// and against float64, so a model's FP8 accuracy is known before any FP8 kernel runs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <optional>
#include <sstream>

#include "command.hpp"
#include "host_memory.hpp"
#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"

#ifdef MXMOE_HAVE_CUDA
#include <cuda_runtime.h>

#include "mxmoe/device_buffer.hpp"
#endif

namespace mxmoe::cli {
namespace {

struct VerifyOptions {
  std::string path;
  int layer = -1;
  int tokens = 64;
  int top_k = 0;
  bool top_k_given = false;  // otherwise min(E, 4)
  std::string activation;  // empty: from the layout
  std::string backend = "auto";
  std::string source;  // an unquantized checkpoint: report the quantisation error against it
  double tolerance = 1e-2;
  bool tolerance_given = false;  // otherwise 1e-2, or kFp8Tolerance with --act fp8
  std::string act = "bf16";      // the activation precision: bf16 | fp8
  std::uint64_t seed = 1;
};

// --act fp8's default tolerance against float64: E4M3 rounds each activation to a relative step of
// 2^-3, an rms error of about 3.6% per element that dot products keep (measured 3.0-4.6e-2 on random
// data, tests/test_w4a8_reference.cpp; FlashInfer's W4A8 4.6e-2).
constexpr double kFp8Tolerance = 6e-2;

ActivationConfig activation_for(const std::string& name, MoeLayout layout) {
  const ActivationKind kind = !name.empty()                     ? parse_activation_kind(name)
                              : layout == MoeLayout::GptOss     ? ActivationKind::GptOssSwiglu
                              : layout == MoeLayout::DeepSeekV4 ? ActivationKind::ClampedSiluMul
                                                                : ActivationKind::SiluMul;
  switch (kind) {
    case ActivationKind::SiluMul: return ActivationConfig::silu_mul();
    case ActivationKind::ClampedSiluMul: return ActivationConfig::clamped_silu_mul(10.0f);
    case ActivationKind::GptOssSwiglu: return ActivationConfig::gpt_oss();
  }
  return ActivationConfig::silu_mul();
}

// ---- --source: the quantisation error against the unquantized layer

// The unquantized layer `layer` of `source_path` run in float64 (reference::moe_forward_f64 on its
// float weights) on the tokens the MXFP4 layer ran, against the MXFP4 layer's oracle output.
verify::Comparison source_error(const std::string& source_path, const LoadedMoeLayer& mx, const std::vector<std::uint16_t>& hidden,
                                const TopK& topk, const ActivationConfig& act, const std::vector<std::uint16_t>& oracle) {
  const Checkpoint src = Checkpoint::open(source_path);
  const MoeLayerRef ref = find_moe_layer(src, mx.ref.layer);
  if (layout_is_quantized(ref.layout))
    fail(ErrorCode::InvalidArgument, "--source '" + source_path + "': layer " + std::to_string(ref.layer) + " is " +
                                         moe_layout_name(ref.layout) + ", already MXFP4; --source takes the unquantized (bf16/f16/f32) model");
  reference::DenseExpertWeights dense;
  const LoadedMoeLayer s = quantize_moe_layer(src, ref, &dense, mx.weights.format);
  const auto &a = s.weights, &b = mx.weights;
  if (a.num_experts != b.num_experts || a.hidden != b.hidden || a.inter != b.inter)
    fail(ErrorCode::Shape, "--source '" + source_path + "': layer " + std::to_string(ref.layer) + " has E=" + std::to_string(a.num_experts) +
                               " H=" + std::to_string(a.hidden) + " I=" + std::to_string(a.inter) + ", the checked layer E=" +
                               std::to_string(b.num_experts) + " H=" + std::to_string(b.hidden) + " I=" + std::to_string(b.inter));
  std::vector<int> tokens(static_cast<std::size_t>(topk.num_tokens));
  for (int t = 0; t < topk.num_tokens; ++t) tokens[static_cast<std::size_t>(t)] = t;
  const std::vector<double> want = reference::moe_forward_f64(a, dense, hidden.data(), topk.num_tokens, topk, act, tokens);
  std::cout << "source: layer " << ref.layer << " of '" << source_path << "' (" << moe_layout_name(ref.layout) << ") in float64 on the same "
            << topk.num_tokens << " tokens\n";
  return verify::compare(oracle, want);
}

// ---- the GPU layer

#ifdef MXMOE_HAVE_CUDA
std::vector<std::uint16_t> forward_gpu(const CanonicalMoeWeights& w, const std::vector<std::uint16_t>& hidden, const TopK& topk,
                                       const ActivationConfig& act, int T, ActivationPrecision precision) {
  MoeLayerOptions opt;
  opt.max_tokens = T;
  opt.top_k = topk.top_k;
  opt.activation = act;
  opt.activation_precision = precision;
  MoeLayer layer(w, opt);
  const DeviceBuffer d_hidden = DeviceBuffer::from_host(hidden, "verify: hidden states");
  const DeviceBuffer d_ids = DeviceBuffer::from_host(topk.ids, "verify: top-k ids");
  const DeviceBuffer d_weights = DeviceBuffer::from_host(topk.weights, "verify: top-k weights");
  const DeviceBuffer d_out(hidden.size() * 2, "verify: output");
  layer.forward(d_hidden.as(), d_ids.as<const std::int32_t>(), d_weights.as<const float>(), d_out.as(), T, nullptr);
  check_cuda(cudaDeviceSynchronize(), "verify: forward");
  return d_out.to_host<std::uint16_t>();
}
#endif

int run_verify(const VerifyOptions& o) {
  // Options first, before any file is opened: each error names the option and the value.
  if (o.layer < 0) fail(ErrorCode::InvalidArgument, "--layer must be a layer number >= 0, got " + std::to_string(o.layer));
  if (o.tokens < 1) fail(ErrorCode::InvalidArgument, "--tokens must be at least 1, got " + std::to_string(o.tokens));
  if (o.top_k_given && o.top_k < 1) fail(ErrorCode::InvalidArgument, "--top-k must be at least 1, got " + std::to_string(o.top_k));
  if (!(std::isfinite(o.tolerance) && o.tolerance >= 0))
    fail(ErrorCode::InvalidArgument, "--tolerance must be a finite number >= 0, got " + (std::ostringstream() << o.tolerance).str());
  if (o.backend != "auto" && o.backend != "cpu" && o.backend != "gpu")
    fail(ErrorCode::InvalidArgument, "--backend must be auto, gpu or cpu, got '" + o.backend + "'");
  const ActivationPrecision precision = parse_activation_precision(o.act);
  const bool fp8 = precision == ActivationPrecision::Fp8PerToken;
  if (fp8 && !o.source.empty())
    fail(ErrorCode::InvalidArgument, "--act fp8 with --source: pick one report (the FP8 error, or the quantisation error)");
  const double tolerance = fp8 && !o.tolerance_given ? kFp8Tolerance : o.tolerance;
  // The device is checked before any file is read: --backend gpu without a usable Hopper GPU says why.
  const DeviceCheck device = o.backend == "cpu" ? DeviceCheck{false, "--backend cpu"} : check_hopper_device();
  if (o.backend == "gpu" && !device.ok) fail(ErrorCode::Unsupported, "--backend gpu: no usable GPU backend: " + device.message);
  const Checkpoint ckpt = Checkpoint::open(o.path);
  const LoadedMoeLayer l = load_moe_layer(ckpt, o.layer);
  const CanonicalMoeWeights& w = l.weights;
  if (fp8 && w.format.nvfp4())
    fail(ErrorCode::Unsupported, "--act fp8: W4A8 takes MXFP4 weights; layer " + std::to_string(l.ref.layer) + " is NVFP4");
  const int E = w.num_experts, H = w.hidden, T = o.tokens;
  const int k = o.top_k_given ? o.top_k : std::min(E, 4);
  const ActivationConfig act = activation_for(o.activation, l.ref.layout);
  const RoutingConfig routing = RoutingConfig::softmax(k, true);
  routing.validate(E);

  // Host memory per token: bf16 hidden and output, fp32 logits, top-k ids and weights, and the oracle's
  // fp32 intermediates (2I + H per routed pair). Checked before anything is allocated.
  const double per_token = 4.0 * H + 4.0 * E + 8.0 * k + 4.0 * k * (2.0 * w.inter + H);
  const std::string sizes = "--tokens " + std::to_string(T) + " (H=" + std::to_string(H) + ", E=" + std::to_string(E) + ", top-k " +
                            std::to_string(k) + ")";
  check_host_bytes(per_token * T, sizes);

  // Random tokens and random router logits: every expert gets exercised, whatever the router.
  const bool fp16 = w.format.activation_dtype == DType::F16;
  const std::vector<std::uint16_t> hidden = allocating("the random hidden states of " + sizes, 2.0 * T * H, [&] {
    return verify::random_hidden(T, H, o.seed, 1.0, w.format.activation_dtype);
  });
  const std::vector<float> logits =
      allocating("the router logits of " + sizes, 4.0 * T * E, [&] { return verify::random_logits(T, E, o.seed + 1); });
  const TopK topk = reference::route(logits.data(), T, E, routing, nullptr);

  std::cout << "layer " << l.ref.layer << " (" << moe_layout_name(l.ref.layout) << ", '" << l.ref.module_prefix << "experts.'): E=" << E
            << " H=" << H << " I=" << w.inter << ", " << (w.format.nvfp4() ? "NVFP4" : "MXFP4") << " with "
            << (w.format.activation_dtype == DType::F16 ? "fp16" : "bf16") << " activations, " << T << " random tokens, softmax top-" << k << ", activation "
            << activation_kind_name(act.kind) << "\n";
  const std::vector<std::uint16_t> oracle = reference::moe_forward(w, hidden.data(), T, topk, act);
  // A CPU output's first kF64Tokens tokens against the independent float64 recomputation.
  constexpr int kF64Tokens = 8;
  auto against_f64 = [&](const std::vector<std::uint16_t>& out) {
    const int checked = std::min(T, kF64Tokens);
    std::vector<int> first_tokens(static_cast<std::size_t>(checked));
    for (int t = 0; t < checked; ++t) first_tokens[static_cast<std::size_t>(t)] = t;
    const std::vector<double> ref = reference::moe_forward_f64(w, hidden.data(), T, topk, act, first_tokens);
    const std::vector<std::uint16_t> got(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(checked) * H);
    return verify::compare(got, ref, w.format.activation_dtype);
  };
  verify::Comparison m;
  if (fp8) {
    // The FP8 oracle against the W4A16 oracle on every token, and against float64 (the bf16 math,
    // exact weights) on the first 8: the second is the check.
    // With a GPU, the GPU's W4A8 output is what is reported and checked, and it is also compared with
    // the CPU's FP8 oracle (the same quantisation; Hopper's FP8 accumulation differs by ~1e-2).
    const std::vector<std::uint16_t> w4a8 = reference::moe_forward(w, hidden.data(), T, topk, act, precision);
    std::vector<std::uint16_t> out = w4a8;
    if (device.ok) {
#ifdef MXMOE_HAVE_CUDA
      out = forward_gpu(w, hidden, topk, act, T, precision);
      std::cout << "backend: GPU MoeLayer on " << device.message << ", W4A8 (FP8 per-token activations, weights folded to E4M3)\n"
                << "W4A8 GPU vs the CPU's FP8 oracle on all " << T << " tokens: rel_l2_err " << verify::compare(out, w4a8).relative_error
                << "\n";
#else
      fail(ErrorCode::Unsupported, "verify: a GPU was reported, but this build has no CUDA backend");
#endif
    } else {
      std::cout << "backend: CPU oracle, W4A8 (FP8 per-token activations, weights folded to E4M3; " << device.message << ")\n";
    }
    std::cout << "W4A8 vs the W4A16 oracle on all " << T << " tokens: rel_l2_err " << verify::compare(out, oracle).relative_error << "\n"
              << "W4A8 vs a float64 recomputation (bf16 activations) of " << std::min(T, kF64Tokens) << " tokens:\n";
    m = against_f64(out);
  } else if (device.ok) {
#ifdef MXMOE_HAVE_CUDA
    const std::vector<std::uint16_t> gpu = forward_gpu(w, hidden, topk, act, T, precision);
    std::cout << "backend: GPU MoeLayer on " << device.message << ", checked against the CPU oracle on all " << T << " tokens\n";
    m = verify::compare(gpu, oracle, w.format.activation_dtype);
#else
    fail(ErrorCode::Unsupported, "verify: a GPU was reported, but this build has no CUDA backend");
#endif
  } else {
    std::cout << "backend: CPU oracle (no GPU layer: " << device.message << "), checked against a float64 recomputation of "
              << std::min(T, kF64Tokens) << " tokens\n";
    m = against_f64(oracle);
  }
  if (!o.source.empty()) {
    if (fp16) fail(ErrorCode::Unsupported, "--source: the layer runs fp16 activations; the source comparison is bf16 only");
    const verify::Comparison q = source_error(o.source, l, hidden, topk, act, oracle);
    std::cout << "quantisation error (" << (w.format.nvfp4() ? "NVFP4" : "MXFP4") << " oracle vs unquantized source): rel_l2_err " << q.relative_error << "  max_abs_err "
              << q.max_abs_error << "  max_abs_ref " << q.max_abs_want << (q.finite ? "" : "  NON-FINITE VALUES") << "\n";
  }
  const bool pass = m.relative_error <= tolerance;  // +inf (never passes) on NaN or Inf
  std::cout << "max_abs_err " << m.max_abs_error << "  rel_l2_err " << m.relative_error << "  max_abs_ref " << m.max_abs_want
            << "  tolerance(rel_l2) "
            << tolerance << (m.finite ? "" : "  NON-FINITE VALUES") << "\n"
            << (pass ? "PASS" : "FAIL") << "\n";
  return pass ? 0 : 1;
}

const RegisterCommand kVerify{
    "verify", "run one MoE layer of a checkpoint on random tokens and check it against an independent computation", 40,
    [](CLI::App& sub) {
      auto o = std::make_shared<VerifyOptions>();
      sub.add_option("path", o->path, "a .safetensors file, a model.safetensors.index.json, or a directory")->required();
      sub.add_option("--layer", o->layer, "the MoE layer to run")->required();
      sub.add_option("--tokens", o->tokens, "random tokens to run (default 64)");
      CLI::Option* top_k = sub.add_option("--top-k", o->top_k, "experts per token (default min(E, 4))");
      sub.add_option("--activation", o->activation, "silu | clamped-silu | gpt-oss (default from the layout)");
      sub.add_option("--backend", o->backend, "auto (GPU when a Hopper GPU is present) | gpu (an error without one) | cpu");
      sub.add_option("--source", o->source,
                     "the unquantized (bf16) checkpoint the layer was quantised from: also report the quantisation error, the "
                     "MXFP4 layer's oracle output against the source layer's float64 forward on the same tokens");
      CLI::Option* tolerance =
          sub.add_option("--tolerance", o->tolerance, "largest relative L2 error that passes (default 1e-2; 6e-2 with --act fp8)");
      sub.add_option("--act", o->act,
                     "activation precision: bf16 (default: the W4A16 kernels) or fp8 (W4A8: the CPU oracle's FP8 per-token mode, "
                     "MXFP4 only: the GPU's W4A8 kernels where a Hopper GPU is, else the CPU oracle's FP8 mode; reported against "
                     "the W4A16 oracle (and the GPU against the FP8 oracle) and checked against float64)");
      sub.add_option("--seed", o->seed, "seed of the random tokens and router logits");
      return [o, top_k, tolerance] {
        o->top_k_given = top_k->count() > 0;
        o->tolerance_given = tolerance->count() > 0;
        return run_verify(*o);
      };
    }};

}  // namespace
}  // namespace mxmoe::cli
