// How tokens choose experts, and what the expert MLP does between its two GEMMs.
#pragma once

#include <string>

namespace mxmoe {

enum class RoutingMode {
  Softmax,        // softmax over all E logits, take top-k (renormalise optional)
  SoftmaxTopK,    // gpt-oss: take top-k logits, softmax over those k
  SigmoidGrouped, // DeepSeek V3: sigmoid scores; selection on score + correction bias, grouped top-k
  SqrtSoftplus,   // DeepSeek V4: sqrt(softplus(logit)) scores; selection on score + correction bias
};

struct RoutingConfig {
  RoutingMode mode = RoutingMode::Softmax;
  int top_k = 1;
  bool renormalize = true;     // divide the k selected weights by their sum
  int n_groups = 1;            // grouped top-k (SigmoidGrouped): experts split into n_groups groups
  int topk_groups = 1;         //   of which the best topk_groups (by sum of their top-2 scores) compete
  float routed_scaling = 1.0f; // multiplies the final weights

  static RoutingConfig softmax(int top_k, bool renormalize);
  static RoutingConfig gpt_oss(int top_k);
  static RoutingConfig deepseek_v3(int top_k, int n_groups, int topk_groups, float scaling);
  static RoutingConfig deepseek_v4(int top_k, float scaling);
  // Throws mxmoe::Error naming the field at fault, given the expert count.
  void validate(int num_experts) const;
};

enum class ActivationKind {
  SiluMul,         // silu(g) * u
  ClampedSiluMul,  // DeepSeek V4: g = min(g, limit), u = clamp(u, -limit, limit), silu(g) * u
  GptOssSwiglu,    // g = min(g, limit), u = clamp(u, -limit, limit), (u + 1) * g * sigmoid(alpha g)
};

struct ActivationConfig {
  ActivationKind kind = ActivationKind::SiluMul;
  float limit = 0.0f;
  float alpha = 1.702f;

  static ActivationConfig silu_mul() { return {}; }
  static ActivationConfig clamped_silu_mul(float limit) { return {ActivationKind::ClampedSiluMul, limit, 1.702f}; }
  static ActivationConfig gpt_oss(float alpha = 1.702f, float limit = 7.0f) {
    return {ActivationKind::GptOssSwiglu, limit, alpha};
  }
  void validate() const;
};

// Which GEMM configuration (src/kernels/moe_gemm.hpp) runs the forward, by its routed (token, slot)
// pairs per block: Tiny and Decode 8 (Tiny with narrow CTAs, for one or two tokens in all), Small 16,
// Medium 32, Prefill 64, all on mma.sync; Wgmma 128, WgmmaNarrow 64 and WgmmaSmall 32 on Hopper's warpgroup MMA (the compute-bound path). Auto picks per call from the average pairs per expert; a fixed choice is
// for tuning and benchmarks.
enum class GemmTile { Auto, Tiny, Decode, Small, Medium, Prefill, Wgmma, WgmmaNarrow, WgmmaSmall };

// The precision the expert GEMMs take their activations in (issue 14). Bf16: the activation dtype as
// stored (W4A16, the default). Fp8PerToken (W4A8, MXFP4 weights only): each token's hidden row, and
// each (token, slot) intermediate row, quantised to E4M3 with one fp32 scale per row, the weights
// folded to E4M3 with a per-row power of two (reference.hpp: moe_forward says exactly how).
enum class ActivationPrecision { Bf16, Fp8PerToken };

const char* routing_mode_name(RoutingMode mode);

// The one name of each choice, as the CLI takes it, the bench records it and messages print it, and
// its inverse (mxmoe::Error InvalidArgument listing the names for any other string).
//   activations: "silu", "clamped-silu", "gpt-oss"
//   GEMM tiles:  "auto", "tiny", "decode", "small", "medium", "prefill", "wgmma"
//   activation precisions: "bf16", "fp8"
const char* activation_kind_name(ActivationKind kind);
ActivationKind parse_activation_kind(const std::string& name);
const char* gemm_tile_name(GemmTile tile);
GemmTile parse_gemm_tile(const std::string& name);
const char* activation_precision_name(ActivationPrecision precision);
ActivationPrecision parse_activation_precision(const std::string& name);

}  // namespace mxmoe
