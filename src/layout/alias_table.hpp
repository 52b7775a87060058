// The one table of MoE tensor names: for each on-disk layout, the anchor that reveals it and, per
// canonical role, the aliases accepted (first present wins) relative to the layer's module path.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mxmoe/checkpoint.hpp"

namespace mxmoe::layout {

enum class Role {
  W13, W13Scale, W13Bias, W2, W2Scale, W2Bias,  // stacked over experts (fused, gpt-oss)
  Gate, GateScale, Up, UpScale, Down, DownScale,  // one tensor per expert (dsv4, dense per-expert)
  RouterWeight, CorrectionBias, RouterLogitBias,  // next to "experts.", under the same module path
  // NVFP4 (ModelOpt): the fp32 global scales ("weight_scale_2"), stacked or per expert, and the
  // activation scales ("input_scale"), accepted and ignored (the activations stay bf16/fp16: W4A16).
  W13Global, W2Global, W13InputScale, W2InputScale,
  GateGlobal, UpGlobal, DownGlobal, GateInputScale, UpInputScale, DownInputScale,
};
const char* role_name(Role role);

// Where a name is rooted. A layer's module path P is everything before "experts." (any prefix, any
// module: "layers.3.ffn.", "model.layers.3.mlp.", "language_model.model.layers.3.block_sparse_moe.").
enum class Scope {
  Experts,    // P + "experts." + alias
  PerExpert,  // P + "experts." + alias with "{e}" replaced by the expert index
  Module,     // P + alias (router, bias)
};

struct TensorRule {
  Role role;
  Scope scope;
  std::vector<std::string> aliases;
  bool required;
};

struct LayoutRule {
  MoeLayout layout;
  const char* name;
  std::vector<std::string> anchors;  // aliases (scope Experts/PerExpert) whose presence reveals the layout
  bool quantized;                    // anchors hold packed E2M1 (U8/I8/F4) rather than bf16/f16/f32
  std::vector<TensorRule> tensors;
};

const std::vector<LayoutRule>& layout_table();
const LayoutRule& layout_rule(MoeLayout layout);
const TensorRule& rule_for(const LayoutRule& layout, Role role);  // the layout must have the role

std::string tensor_name(const std::string& module_prefix, Scope scope, const std::string& alias, int expert);

struct Resolved {
  std::string alias;
  std::string name;  // for expert `expert`
};
// The first alias of `rule` present in `ckpt`, or nothing.
std::optional<Resolved> resolve(const Checkpoint& ckpt, const std::string& module_prefix, const TensorRule& rule,
                                int expert = 0);
// As resolve, but a missing required tensor is an error naming the first alias's full name (and the
// others tried).
std::optional<Resolved> resolve_or_fail(const Checkpoint& ckpt, const std::string& module_prefix, const TensorRule& rule,
                                        int expert = 0);

}  // namespace mxmoe::layout
