#include "mxmoe/config.hpp"

#include <cmath>
#include <cstddef>
#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe {

RoutingConfig RoutingConfig::softmax(int top_k, bool renormalize) {
  RoutingConfig c;
  c.mode = RoutingMode::Softmax;
  c.top_k = top_k;
  c.renormalize = renormalize;
  return c;
}

RoutingConfig RoutingConfig::gpt_oss(int top_k) {
  RoutingConfig c;
  c.mode = RoutingMode::SoftmaxTopK;
  c.top_k = top_k;
  c.renormalize = false;
  return c;
}

RoutingConfig RoutingConfig::deepseek_v3(int top_k, int n_groups, int topk_groups, float scaling) {
  RoutingConfig c;
  c.mode = RoutingMode::SigmoidGrouped;
  c.top_k = top_k;
  c.renormalize = true;
  c.n_groups = n_groups;
  c.topk_groups = topk_groups;
  c.routed_scaling = scaling;
  return c;
}

RoutingConfig RoutingConfig::deepseek_v4(int top_k, float scaling) {
  RoutingConfig c;
  c.mode = RoutingMode::SqrtSoftplus;
  c.top_k = top_k;
  c.renormalize = true;
  c.routed_scaling = scaling;
  return c;
}

void RoutingConfig::validate(int num_experts) const {
  if (num_experts <= 0) fail(ErrorCode::InvalidArgument, "routing: expert count must be positive, got " + std::to_string(num_experts));
  if (top_k < 1 || top_k > num_experts)
    fail(ErrorCode::InvalidArgument, "routing: top_k must be in 1.." + std::to_string(num_experts) + ", got " + std::to_string(top_k));
  if (n_groups < 1 || num_experts % n_groups != 0)
    fail(ErrorCode::InvalidArgument, "routing: n_groups = " + std::to_string(n_groups) + " must divide the expert count " + std::to_string(num_experts));
  if (topk_groups < 1 || topk_groups > n_groups)
    fail(ErrorCode::InvalidArgument, "routing: topk_groups = " + std::to_string(topk_groups) + " must be in 1..n_groups (" + std::to_string(n_groups) + ")");
  if (n_groups > 1 && top_k > topk_groups * (num_experts / n_groups))
    fail(ErrorCode::InvalidArgument, "routing: top_k = " + std::to_string(top_k) + " exceeds the experts in the " + std::to_string(topk_groups) + " selected groups");
  if (!std::isfinite(routed_scaling) || routed_scaling <= 0.0f)
    fail(ErrorCode::InvalidArgument, "routing: routed_scaling must be a positive finite number, got " + std::to_string(routed_scaling));
}

void ActivationConfig::validate() const {
  if (kind != ActivationKind::SiluMul && !(limit > 0.0f && std::isfinite(limit)))
    fail(ErrorCode::InvalidArgument, std::string("activation ") + activation_kind_name(kind) + ": limit must be a positive finite number, got " + std::to_string(limit));
  if (kind == ActivationKind::GptOssSwiglu && !(alpha > 0.0f && std::isfinite(alpha)))
    fail(ErrorCode::InvalidArgument, "activation gpt-oss: alpha must be positive and finite, got " + std::to_string(alpha));
}

const char* routing_mode_name(RoutingMode mode) {
  switch (mode) {
    case RoutingMode::Softmax: return "softmax";
    case RoutingMode::SoftmaxTopK: return "gpt-oss (top-k then softmax)";
    case RoutingMode::SigmoidGrouped: return "sigmoid grouped (DeepSeek V3)";
    case RoutingMode::SqrtSoftplus: return "sqrt-softplus (DeepSeek V4)";
  }
  return "?";
}

namespace {

// Name <-> value over every value of an enum, so that a name and its parse cannot disagree.
template <class E, std::size_t N>
E parse_name(const std::string& name, const E (&all)[N], const char* (*name_of)(E), const char* what) {
  std::string known;
  for (E e : all) {
    if (name == name_of(e)) return e;
    known += (known.empty() ? "" : ", ") + std::string(name_of(e));
  }
  fail(ErrorCode::InvalidArgument, std::string("unknown ") + what + " '" + name + "' (known: " + known + ")");
}

constexpr ActivationKind kActivationKinds[] = {ActivationKind::SiluMul, ActivationKind::ClampedSiluMul, ActivationKind::GptOssSwiglu};
constexpr GemmTile kGemmTiles[] = {GemmTile::Auto, GemmTile::Tiny, GemmTile::Decode, GemmTile::Small, GemmTile::Medium, GemmTile::Prefill,
                                 GemmTile::Wgmma, GemmTile::WgmmaNarrow, GemmTile::WgmmaSmall};
constexpr ActivationPrecision kActivationPrecisions[] = {ActivationPrecision::Bf16, ActivationPrecision::Fp8PerToken};

}  // namespace

const char* activation_kind_name(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::SiluMul: return "silu";
    case ActivationKind::ClampedSiluMul: return "clamped-silu";
    case ActivationKind::GptOssSwiglu: return "gpt-oss";
  }
  return "?";
}

ActivationKind parse_activation_kind(const std::string& name) {
  return parse_name(name, kActivationKinds, activation_kind_name, "activation");
}

const char* gemm_tile_name(GemmTile tile) {
  switch (tile) {
    case GemmTile::Auto: return "auto";
    case GemmTile::Tiny: return "tiny";
    case GemmTile::Decode: return "decode";
    case GemmTile::Small: return "small";
    case GemmTile::Medium: return "medium";
    case GemmTile::Prefill: return "prefill";
    case GemmTile::Wgmma: return "wgmma";
    case GemmTile::WgmmaNarrow: return "wgmma-narrow";
    case GemmTile::WgmmaSmall: return "wgmma-small";
  }
  return "?";
}

GemmTile parse_gemm_tile(const std::string& name) { return parse_name(name, kGemmTiles, gemm_tile_name, "GEMM tile"); }

const char* activation_precision_name(ActivationPrecision precision) {
  switch (precision) {
    case ActivationPrecision::Bf16: return "bf16";
    case ActivationPrecision::Fp8PerToken: return "fp8";
  }
  return "?";
}

ActivationPrecision parse_activation_precision(const std::string& name) {
  return parse_name(name, kActivationPrecisions, activation_precision_name, "activation precision");
}

}  // namespace mxmoe
