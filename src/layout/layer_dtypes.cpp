#include "layout/layer_dtypes.hpp"

#include "layout/alias_table.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::layout {

bool is_packed_dtype(const std::string& d) { return d == "U8" || d == "I8" || d == "F4"; }
bool is_float_dtype_name(const std::string& d) { return d == "BF16" || d == "F16" || d == "F32"; }

void check_layer_dtypes(const Checkpoint& ckpt, const MoeLayerRef& ref) {
  const LayoutRule& rule = layout_rule(ref.layout);
  // The anchor that revealed the layer (the first weight tensor of its table, of expert 0) fixed its
  // kind; every other weight must be of that kind. Both are named, the anchor first.
  auto kind = [](const std::string& d) {
    return d + (is_packed_dtype(d) ? " (packed E2M1)" : is_float_dtype_name(d) ? " (float)" : "");
  };
  std::optional<Resolved> anchor;
  for (const auto& t : rule.tensors) {
    const bool weight = t.role == Role::W13 || t.role == Role::W2 || t.role == Role::Gate || t.role == Role::Up || t.role == Role::Down;
    if (!weight) continue;
    const int experts = t.scope == Scope::PerExpert ? ref.num_experts : 1;
    for (int e = 0; e < experts; ++e) {
      const auto r = resolve(ckpt, ref.module_prefix, t, e);
      if (!r) continue;  // a missing tensor is the loader's error, named there
      if (!anchor) anchor = r;
      const std::string& d = ckpt.info(r->name).dtype_name;
      if (rule.quantized ? is_packed_dtype(d) : is_float_dtype_name(d)) continue;
      std::string what = "'" + r->name + "' is " + kind(d);
      if (t.scope == Scope::PerExpert) what = "expert " + std::to_string(e) + "'s " + what;
      if (t.scope == Scope::PerExpert && rule.quantized && is_float_dtype_name(d))
        what += ": expert " + std::to_string(e) + " was left unquantized";
      fail(ErrorCode::DType, "layer " + std::to_string(ref.layer) + " ('" + ref.module_prefix + "experts.'): its weights mix dtypes: '" +
                                 anchor->name + "' is " + kind(ckpt.info(anchor->name).dtype_name) + " but " + what +
                                 "; a layer's weights must be all packed E2M1 (U8, I8, F4) or all float (BF16, F16, F32)");
    }
  }
}

}  // namespace mxmoe::layout
