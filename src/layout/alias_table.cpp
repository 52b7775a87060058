#include "layout/alias_table.hpp"

#include "mxmoe/error.hpp"

namespace mxmoe::layout {
namespace {

using S = Scope;
using R = Role;

// Router names shared by the layouts that route with a "gate" (DeepSeek, SGLang/vLLM, Mixtral/Qwen).
TensorRule router_weight(std::vector<std::string> aliases) { return {R::RouterWeight, S::Module, std::move(aliases), false}; }

std::vector<LayoutRule> build_table() {
  const std::vector<std::string> fused_router = {"gate.weight", "router.weight"};
  const std::vector<std::string> fused_correction = {"gate.e_score_correction_bias"};
  return {
      // DeepSeek V4's MXFP4 experts (w1/w3/w2 .weight + .scale); ModelOpt's NVFP4 under the same
      // w1/w3/w2 names stores .weight_scale (F8_E4M3), .weight_scale_2 (F32 scalar) and .input_scale.
      {MoeLayout::DeepSeekV4, "dsv4", {"{e}.w1.weight"}, true,
       {
           {R::Gate, S::PerExpert, {"{e}.w1.weight"}, true},
           {R::GateScale, S::PerExpert, {"{e}.w1.scale", "{e}.w1.weight_scale"}, true},
           {R::GateGlobal, S::PerExpert, {"{e}.w1.weight_scale_2"}, false},
           {R::GateInputScale, S::PerExpert, {"{e}.w1.input_scale"}, false},
           {R::Up, S::PerExpert, {"{e}.w3.weight"}, true},
           {R::UpScale, S::PerExpert, {"{e}.w3.scale", "{e}.w3.weight_scale"}, true},
           {R::UpGlobal, S::PerExpert, {"{e}.w3.weight_scale_2"}, false},
           {R::UpInputScale, S::PerExpert, {"{e}.w3.input_scale"}, false},
           {R::Down, S::PerExpert, {"{e}.w2.weight"}, true},
           {R::DownScale, S::PerExpert, {"{e}.w2.scale", "{e}.w2.weight_scale"}, true},
           {R::DownGlobal, S::PerExpert, {"{e}.w2.weight_scale_2"}, false},
           {R::DownInputScale, S::PerExpert, {"{e}.w2.input_scale"}, false},
           router_weight({"gate.weight"}),
           {R::CorrectionBias, S::Module, {"gate.bias", "gate.e_score_correction_bias"}, false},
       }},
      {MoeLayout::Fused, "fused", {"w13_weight"}, true,
       {
           {R::W13, S::Experts, {"w13_weight"}, true},
           {R::W13Scale, S::Experts, {"w13_weight_scale", "w13_weight_scale_inv"}, true},
           {R::W13Bias, S::Experts, {"w13_weight_bias", "w13_bias"}, false},
           // NVFP4 (vLLM/SGLang's ModelOpt module): w13_weight_scale F8_E4M3 [E, 2I, H/16], the global
           // scales [E, 2] (gate, up) or [E] (both), [E] for w2; input scales ignored.
           {R::W13Global, S::Experts, {"w13_weight_scale_2"}, false},
           {R::W13InputScale, S::Experts, {"w13_input_scale"}, false},
           {R::W2, S::Experts, {"w2_weight"}, true},
           {R::W2Scale, S::Experts, {"w2_weight_scale", "w2_weight_scale_inv"}, true},
           {R::W2Bias, S::Experts, {"w2_weight_bias", "w2_bias"}, false},
           {R::W2Global, S::Experts, {"w2_weight_scale_2"}, false},
           {R::W2InputScale, S::Experts, {"w2_input_scale"}, false},
           router_weight(fused_router),
           {R::CorrectionBias, S::Module, fused_correction, false},
       }},
      // NVIDIA ModelOpt's per-expert checkpoints (hf_quant_config.json quant_algo NVFP4): per expert
      // gate_proj/up_proj/down_proj .weight U8 [N, K/2], .weight_scale F8_E4M3 [N, K/16],
      // .weight_scale_2 F32 scalar ([] or [1]), .input_scale F32 (ignored). The same names with E8M0
      // scales [N, K/32] and no weight_scale_2 load as MXFP4.
      {MoeLayout::ModelOpt, "modelopt", {"{e}.gate_proj.weight"}, true,
       {
           {R::Gate, S::PerExpert, {"{e}.gate_proj.weight"}, true},
           {R::GateScale, S::PerExpert, {"{e}.gate_proj.weight_scale"}, true},
           {R::GateGlobal, S::PerExpert, {"{e}.gate_proj.weight_scale_2"}, false},
           {R::GateInputScale, S::PerExpert, {"{e}.gate_proj.input_scale"}, false},
           {R::Up, S::PerExpert, {"{e}.up_proj.weight"}, true},
           {R::UpScale, S::PerExpert, {"{e}.up_proj.weight_scale"}, true},
           {R::UpGlobal, S::PerExpert, {"{e}.up_proj.weight_scale_2"}, false},
           {R::UpInputScale, S::PerExpert, {"{e}.up_proj.input_scale"}, false},
           {R::Down, S::PerExpert, {"{e}.down_proj.weight"}, true},
           {R::DownScale, S::PerExpert, {"{e}.down_proj.weight_scale"}, true},
           {R::DownGlobal, S::PerExpert, {"{e}.down_proj.weight_scale_2"}, false},
           {R::DownInputScale, S::PerExpert, {"{e}.down_proj.input_scale"}, false},
           router_weight(fused_router),
           {R::CorrectionBias, S::Module, fused_correction, false},
       }},
      {MoeLayout::GptOss, "gpt-oss", {"gate_up_proj_blocks"}, true,
       {
           {R::W13, S::Experts, {"gate_up_proj_blocks"}, true},
           {R::W13Scale, S::Experts, {"gate_up_proj_scales"}, true},
           {R::W13Bias, S::Experts, {"gate_up_proj_bias"}, false},
           {R::W2, S::Experts, {"down_proj_blocks"}, true},
           {R::W2Scale, S::Experts, {"down_proj_scales"}, true},
           {R::W2Bias, S::Experts, {"down_proj_bias"}, false},
           router_weight({"router.weight"}),
           {R::RouterLogitBias, S::Module, {"router.bias"}, false},
       }},
      {MoeLayout::DensePerExpert, "dense-per-expert", {"{e}.w1.weight", "{e}.gate_proj.weight"}, false,
       {
           {R::Gate, S::PerExpert, {"{e}.w1.weight", "{e}.gate_proj.weight"}, true},
           {R::Up, S::PerExpert, {"{e}.w3.weight", "{e}.up_proj.weight"}, true},
           {R::Down, S::PerExpert, {"{e}.w2.weight", "{e}.down_proj.weight"}, true},
           router_weight(fused_router),
           {R::CorrectionBias, S::Module, fused_correction, false},
       }},
      {MoeLayout::DenseFused, "dense-fused", {"w13_weight"}, false,
       {
           {R::W13, S::Experts, {"w13_weight"}, true},
           {R::W13Bias, S::Experts, {"w13_weight_bias", "w13_bias"}, false},
           {R::W2, S::Experts, {"w2_weight"}, true},
           {R::W2Bias, S::Experts, {"w2_weight_bias", "w2_bias"}, false},
           router_weight(fused_router),
           {R::CorrectionBias, S::Module, fused_correction, false},
       }},
      // Hugging Face transformers' bf16 gpt-oss (GptOssExperts): gate_up_proj [E, H, 2I] multiplies the
      // hidden state from the right (x @ W), its last dim interleaves gate (even columns) and up (odd);
      // gate_up_proj_bias [E, 2I] the same; down_proj [E, I, H], down_proj_bias [E, H]; router
      // mlp.router.weight [E, H] and its logit bias mlp.router.bias [E].
      {MoeLayout::DenseGptOss, "dense-gpt-oss", {"gate_up_proj"}, false,
       {
           {R::W13, S::Experts, {"gate_up_proj"}, true},
           {R::W13Bias, S::Experts, {"gate_up_proj_bias"}, false},
           {R::W2, S::Experts, {"down_proj"}, true},
           {R::W2Bias, S::Experts, {"down_proj_bias"}, false},
           router_weight({"router.weight"}),
           {R::RouterLogitBias, S::Module, {"router.bias"}, false},
       }},
  };
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::W13: return "w13";
    case Role::W13Scale: return "w13_scale";
    case Role::W13Bias: return "w13_bias";
    case Role::W2: return "w2";
    case Role::W2Scale: return "w2_scale";
    case Role::W2Bias: return "w2_bias";
    case Role::Gate: return "gate (w1)";
    case Role::GateScale: return "gate scale";
    case Role::Up: return "up (w3)";
    case Role::UpScale: return "up scale";
    case Role::Down: return "down (w2)";
    case Role::DownScale: return "down scale";
    case Role::RouterWeight: return "router_weight";
    case Role::CorrectionBias: return "correction_bias";
    case Role::RouterLogitBias: return "router_logit_bias";
    case Role::W13Global: return "w13_global_scale";
    case Role::W2Global: return "w2_global_scale";
    case Role::W13InputScale: return "w13_input_scale (ignored)";
    case Role::W2InputScale: return "w2_input_scale (ignored)";
    case Role::GateGlobal: return "gate global scale";
    case Role::UpGlobal: return "up global scale";
    case Role::DownGlobal: return "down global scale";
    case Role::GateInputScale: return "gate input scale (ignored)";
    case Role::UpInputScale: return "up input scale (ignored)";
    case Role::DownInputScale: return "down input scale (ignored)";
  }
  return "?";
}

const std::vector<LayoutRule>& layout_table() {
  static const std::vector<LayoutRule> table = build_table();
  return table;
}

const LayoutRule& layout_rule(MoeLayout layout) {
  for (const auto& r : layout_table())
    if (r.layout == layout) return r;
  fail(ErrorCode::InvalidArgument, "no layout rule for layout " + std::to_string(static_cast<int>(layout)));
}

const TensorRule& rule_for(const LayoutRule& layout, Role role) {
  for (const auto& t : layout.tensors)
    if (t.role == role) return t;
  fail(ErrorCode::InvalidArgument, std::string("layout ") + layout.name + " has no tensor for role " + role_name(role));
}

std::string tensor_name(const std::string& module_prefix, Scope scope, const std::string& alias, int expert) {
  if (scope == Scope::Module) return module_prefix + alias;
  std::string a = alias;
  if (scope == Scope::PerExpert) {
    const auto pos = a.find("{e}");
    if (pos != std::string::npos) a.replace(pos, 3, std::to_string(expert));
  }
  return module_prefix + "experts." + a;
}

std::optional<Resolved> resolve(const Checkpoint& ckpt, const std::string& module_prefix, const TensorRule& rule, int expert) {
  for (const auto& alias : rule.aliases) {
    std::string name = tensor_name(module_prefix, rule.scope, alias, expert);
    if (ckpt.contains(name)) return Resolved{alias, std::move(name)};
  }
  return std::nullopt;
}

std::optional<Resolved> resolve_or_fail(const Checkpoint& ckpt, const std::string& module_prefix, const TensorRule& rule,
                                        int expert) {
  auto r = resolve(ckpt, module_prefix, rule, expert);
  if (r || !rule.required) return r;
  std::string tried;
  for (std::size_t i = 1; i < rule.aliases.size(); ++i)
    tried += (i > 1 ? ", '" : " (also tried '") + tensor_name(module_prefix, rule.scope, rule.aliases[i], expert) + "'";
  if (!tried.empty()) tried += ")";
  fail(ErrorCode::NotFound, "checkpoint '" + ckpt.path() + "': missing tensor '" +
                                tensor_name(module_prefix, rule.scope, rule.aliases.front(), expert) + "'" + tried +
                                " for " + role_name(rule.role));
}

}  // namespace mxmoe::layout
