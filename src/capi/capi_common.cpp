// The C ABI's backend-independent half: errors, checks, scale conversion and the CPU oracle.
#include <algorithm>
#include <string>

#include "capi/internal.hpp"
#include "kernels/tile_layout.hpp"
#include "layout/tensor_convert.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe::capi {

namespace {
thread_local std::string last_error;
}  // namespace

void set_last_error(const std::string& message) { last_error = message; }

void require(const void* p, const char* entry, const char* name) {
  if (!p) fail(ErrorCode::InvalidArgument, std::string(entry) + ": " + name + " is null");
}

// The struct's format: group 32 (MXFP4, bf16) or 16 (NVFP4, bf16 or fp16); errors name the field.
WeightFormat format_of(const mxmoe_weights& w) {
  if (w.group != 32 && w.group != 16)
    fail(ErrorCode::InvalidArgument, "mxmoe_weights.group must be 32 (MXFP4, E8M0 scales) or 16 (NVFP4, UE4M3 scales), got " +
                                         std::to_string(w.group));
  const WeightFormat f{w.group, w.f16_activations ? DType::F16 : DType::BF16};
  validate_layer_formats(f);  // fp16 with MXFP4 is refused here, saying why
  return f;
}

ActivationPrecision precision_of(const mxmoe_weights& w, const char* entry) {
  if (w.fp8_activations != 0 && w.fp8_activations != 1)
    fail(ErrorCode::InvalidArgument, std::string(entry) + ": mxmoe_weights.fp8_activations must be 0 (16-bit activations) or 1 "
                                         "(W4A8: FP8 per-token activations), got " + std::to_string(w.fp8_activations));
  if (!w.fp8_activations) return ActivationPrecision::Bf16;
  if (w.group != 32 && w.group != 16) format_of(w);  // neither format: that error first
  if (w.group != 32)
    fail(ErrorCode::Unsupported, std::string(entry) + ": FP8 activations (W4A8, mxmoe_weights.fp8_activations) take MXFP4 "
                                     "weights (group 32, E8M0 scales), got group " + std::to_string(w.group) +
                                     (w.group == 16 ? " (NVFP4)" : ""));
  if (w.f16_activations)
    fail(ErrorCode::DType, std::string(entry) + ": FP8 activations (W4A8, mxmoe_weights.fp8_activations) are quantised from "
                               "bf16 hidden states; f16_activations must be 0");
  return ActivationPrecision::Fp8PerToken;
}

// Canonical weights viewing the caller's host memory (no copy).
CanonicalMoeWeights host_weights(const mxmoe_weights& w) {
  const std::int64_t E = w.num_experts, H = w.hidden, I = w.inter;
  CanonicalMoeWeights c;
  c.format = format_of(w);
  const std::int64_t G = c.format.group_size;
  c.num_experts = w.num_experts;
  c.hidden = w.hidden;
  c.inter = w.inter;
  if (E <= 0 || H <= 0 || I <= 0 || H % G || I % G)
    fail(ErrorCode::Shape, "weights: E, H, I must be positive and H, I multiples of the group (" + std::to_string(G) +
                               "), got E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" + std::to_string(I));
  c.w13 = HostTensor::view(DType::U8, {E, 2 * I, H / 2}, w.w13, nullptr);
  c.w13_scale = HostTensor::view(DType::U8, {E, 2 * I, H / G}, w.w13_scale, nullptr);
  c.w2 = HostTensor::view(DType::U8, {E, H, I / 2}, w.w2, nullptr);
  c.w2_scale = HostTensor::view(DType::U8, {E, H, I / G}, w.w2_scale, nullptr);
  if (w.w13_bias) c.w13_bias = HostTensor::view(DType::F32, {E, 2 * I}, w.w13_bias, nullptr);
  if (w.w2_bias) c.w2_bias = HostTensor::view(DType::F32, {E, H}, w.w2_bias, nullptr);
  if (w.w13_global_scale) c.w13_global_scale = HostTensor::view(DType::F32, {E, 2}, w.w13_global_scale, nullptr);
  if (w.w2_global_scale) c.w2_global_scale = HostTensor::view(DType::F32, {E}, w.w2_global_scale, nullptr);
  return c;
}

ActivationConfig activation_of(const mxmoe_activation& a) {
  if (a.kind < 0 || a.kind > 2)
    fail(ErrorCode::InvalidArgument, "activation kind must be 0 (silu), 1 (clamped silu) or 2 (gpt-oss swiglu), got " +
                                         std::to_string(a.kind));
  ActivationConfig c{static_cast<ActivationKind>(a.kind), a.limit, a.alpha};
  c.validate();
  return c;
}

RoutingConfig routing_of(const mxmoe_routing& r, int num_experts) {
  if (r.mode < 0 || r.mode > 3)
    fail(ErrorCode::InvalidArgument, "routing mode must be 0 (softmax), 1 (gpt-oss), 2 (deepseek_v3) or 3 (deepseek_v4), got " +
                                         std::to_string(r.mode));
  RoutingConfig c;
  c.mode = static_cast<RoutingMode>(r.mode);
  c.top_k = r.top_k;
  c.renormalize = r.renormalize != 0;
  c.n_groups = r.n_groups;
  c.topk_groups = r.topk_groups;
  c.routed_scaling = r.routed_scaling;
  c.validate(num_experts);
  return c;
}

}  // namespace mxmoe::capi

using namespace mxmoe;
using capi::guarded;
using capi::require;

extern "C" {

int mxmoe_c_abi_version(void) { return MXMOE_C_ABI_VERSION; }

const char* mxmoe_last_error(void) { return capi::last_error.c_str(); }

int mxmoe_check_problem(int E, int H, int I, int group, int top_k, const mxmoe_activation* act) {
  return guarded("mxmoe_check_problem", [&] {
    if (group != 32 && group != 16)
      fail(ErrorCode::InvalidArgument, "the quantisation group must be 32 (MXFP4, E8M0 scales) or 16 (NVFP4, UE4M3 scales), got " +
                                           std::to_string(group));
    if (E <= 0 || H <= 0 || I <= 0)
      fail(ErrorCode::Shape, "num_experts, hidden_size and intermediate_size must be positive, got E=" + std::to_string(E) +
                                 " H=" + std::to_string(H) + " I=" + std::to_string(I));
    if (H % group || I % group)
      fail(ErrorCode::Shape, std::string("hidden_size and intermediate_size must be multiples of the ") +
                                 (group == 32 ? "MXFP4 group (32)" : "NVFP4 group (16)") + ", got H=" + std::to_string(H) +
                                 " I=" + std::to_string(I));
    if (top_k < 1 || top_k > E)
      fail(ErrorCode::InvalidArgument, "top_k must be in 1.." + std::to_string(E) + " (the expert count), got " + std::to_string(top_k));
    if (act) capi::activation_of(*act);
  });
}

int mxmoe_prepared_bytes(int rows, int k, int group, int64_t* weight_bytes, int64_t* scale_bytes) {
  return guarded("mxmoe_prepared_bytes", [&] {
    require(weight_bytes, "mxmoe_prepared_bytes", "weight_bytes");
    require(scale_bytes, "mxmoe_prepared_bytes", "scale_bytes");
    if (group != 32 && group != 16)
      fail(ErrorCode::InvalidArgument, "prepared matrix: the group must be 32 or 16, got " + std::to_string(group));
    if (rows <= 0 || rows % tiling::kTileRows || k <= 0 || k % group)
      fail(ErrorCode::Shape, "prepared matrix: rows must be a positive multiple of 16 and K of the group (" + std::to_string(group) +
                                 "), got rows=" + std::to_string(rows) + " K=" + std::to_string(k));
    const tiling::TiledShape s{rows, k, false, group};
    *weight_bytes = s.weight_bytes();
    *scale_bytes = s.scale_bytes();
  });
}

int mxmoe_scales_to_e8m0(const float* scales, uint8_t* out, const int64_t* shape, int rank, const char* name) {
  return guarded("mxmoe_scales_to_e8m0", [&] {
    require(shape, "mxmoe_scales_to_e8m0", "shape");
    const Shape s(shape, shape + rank);
    if (shape_numel(s) == 0) return;
    require(scales, "mxmoe_scales_to_e8m0", "scales");
    require(out, "mxmoe_scales_to_e8m0", "out");
    layout::scales_to_e8m0(HostTensor::view(DType::F32, s, scales, nullptr), name ? name : "scales", out);
  });
}

int mxmoe_forward_cpu(const mxmoe_weights* w, const mxmoe_activation* act, const uint16_t* hidden, const int32_t* ids,
                      const float* topk_weights, uint16_t* out, int num_tokens, int top_k, int threads) {
  return guarded("mxmoe_forward_cpu", [&] {
    const char* entry = "mxmoe_forward_cpu";
    require(w, entry, "weights");
    require(act, entry, "activation");
    require(hidden, entry, "hidden");
    require(ids, entry, "topk_ids");
    require(topk_weights, entry, "topk_weights");
    require(out, entry, "out");
    if (num_tokens < 1 || top_k < 1)
      fail(ErrorCode::InvalidArgument, std::string(entry) + ": num_tokens and top_k must be positive, got " +
                                           std::to_string(num_tokens) + " and " + std::to_string(top_k));
    const ActivationPrecision precision = capi::precision_of(*w, entry);
    if (precision == ActivationPrecision::Fp8PerToken && (w->w13_global_scale || w->w2_global_scale))
      fail(ErrorCode::InvalidArgument, std::string(entry) + ": FP8 activations (W4A8) on the CPU take canonical MXFP4 weights "
                                           "without factors (the oracle folds each row itself); w13_global_scale and "
                                           "w2_global_scale must be null");
    const CanonicalMoeWeights cw = capi::host_weights(*w);
    cw.validate();
    TopK topk;
    topk.num_tokens = num_tokens;
    topk.top_k = top_k;
    const std::size_t pairs = static_cast<std::size_t>(num_tokens) * top_k;
    topk.ids.assign(ids, ids + pairs);
    topk.weights.assign(topk_weights, topk_weights + pairs);
    const auto y = reference::moe_forward(cw, hidden, num_tokens, topk, capi::activation_of(*act), precision, threads);
    std::copy(y.begin(), y.end(), out);
  });
}

int mxmoe_route_cpu(const float* logits, const float* correction_bias, int num_tokens, int num_experts,
                    const mxmoe_routing* routing, int32_t* ids, float* weights) {
  return guarded("mxmoe_route_cpu", [&] {
    const char* entry = "mxmoe_route_cpu";
    require(logits, entry, "router_logits");
    require(routing, entry, "routing");
    require(ids, entry, "topk_ids");
    require(weights, entry, "topk_weights");
    const RoutingConfig config = capi::routing_of(*routing, num_experts);
    const TopK r = reference::route(logits, num_tokens, num_experts, config, correction_bias);
    std::copy(r.ids.begin(), r.ids.end(), ids);
    std::copy(r.weights.begin(), r.weights.end(), weights);
  });
}

}  // extern "C"
