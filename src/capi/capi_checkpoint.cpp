// The C ABI's checkpoint entry: one MoE layer through the C++ loader (every naming; MXFP4 with fp32
// or E8M0 scales, NVFP4 with UE4M3 and global scales), handed out tensor by tensor so the caller
// copies straight into its own memory.
#include <cstring>
#include <memory>
#include <string>

#include "capi/internal.hpp"
#include "layout/alias_table.hpp"
#include "mxmoe/checkpoint.hpp"

using namespace mxmoe;
using capi::guarded;
using capi::require;

struct mxmoe_layer {
  LoadedMoeLayer loaded;
  std::string description;

  const HostTensor* tensor(const std::string& role) const {
    const CanonicalMoeWeights& w = loaded.weights;
    if (role == "w13") return &w.w13;
    if (role == "w13_scale") return &w.w13_scale;
    if (role == "w2") return &w.w2;
    if (role == "w2_scale") return &w.w2_scale;
    auto opt = [](const std::optional<HostTensor>& t) { return t ? &*t : nullptr; };
    if (role == "w13_global_scale") return opt(w.w13_global_scale);
    if (role == "w2_global_scale") return opt(w.w2_global_scale);
    if (role == "w13_bias") return opt(w.w13_bias);
    if (role == "w2_bias") return opt(w.w2_bias);
    if (role == "router_weight") return opt(w.router_weight);
    if (role == "correction_bias") return opt(w.correction_bias);
    if (role == "router_logit_bias") return opt(loaded.router_logit_bias);
    fail(ErrorCode::InvalidArgument,
         "unknown layer tensor role '" + role +
             "' (expected w13, w13_scale, w2, w2_scale, w13_global_scale, w2_global_scale, w13_bias, w2_bias, router_weight, "
             "correction_bias, router_logit_bias)");
  }
};

extern "C" {

int mxmoe_layer_open(const char* path, int layer, mxmoe_layer** out) {
  return guarded("mxmoe_layer_open", [&] {
    require(path, "mxmoe_layer_open", "path");
    require(out, "mxmoe_layer_open", "out");
    *out = nullptr;
    auto l = std::make_unique<mxmoe_layer>();
    l->loaded = load_moe_layer(Checkpoint::open(path), layer);
    // "fused, MXFP4, scales E8M0"; the format is named once (the loader's scale format may name it).
    const std::string format = l->loaded.weights.format.nvfp4() ? "NVFP4" : "MXFP4";
    const std::string& scales = l->loaded.scale_format;
    l->description = std::string(moe_layout_name(l->loaded.ref.layout)) +
                     (scales.find(format) == std::string::npos ? ", " + format : std::string()) + ", scales " + scales;
    *out = l.release();
  });
}

int mxmoe_layer_shape(const mxmoe_layer* l, int* E, int* H, int* I, int* has_optional) {
  return guarded("mxmoe_layer_shape", [&] {
    require(l, "mxmoe_layer_shape", "layer");
    const CanonicalMoeWeights& w = l->loaded.weights;
    if (E) *E = w.num_experts;
    if (H) *H = w.hidden;
    if (I) *I = w.inter;
    if (has_optional) {
      int i = 0;
      for (const char* role : {"w13_bias", "w2_bias", "router_weight", "correction_bias", "router_logit_bias"})
        has_optional[i++] = l->tensor(role) != nullptr;
    }
  });
}

int mxmoe_layer_format(const mxmoe_layer* l, int* group) {
  return guarded("mxmoe_layer_format", [&] {
    require(l, "mxmoe_layer_format", "layer");
    require(group, "mxmoe_layer_format", "group");
    *group = l->loaded.weights.format.group_size;
  });
}

int64_t mxmoe_layer_bytes(const mxmoe_layer* l, const char* role) {
  if (!l || !role) return 0;
  try {
    const HostTensor* t = l->tensor(role);
    return t ? static_cast<int64_t>(t->nbytes()) : 0;
  } catch (...) {
    return 0;
  }
}

int mxmoe_layer_copy(const mxmoe_layer* l, const char* role, void* dst, int64_t bytes) {
  return guarded("mxmoe_layer_copy", [&] {
    require(l, "mxmoe_layer_copy", "layer");
    require(role, "mxmoe_layer_copy", "role");
    const HostTensor* t = l->tensor(role);
    if (!t) fail(ErrorCode::NotFound, std::string("mxmoe_layer_copy: the layer has no ") + role);
    if (bytes != static_cast<int64_t>(t->nbytes()))
      fail(ErrorCode::Shape, std::string("mxmoe_layer_copy: ") + role + " holds " + std::to_string(t->nbytes()) +
                                 " bytes, the destination " + std::to_string(bytes));
    require(dst, "mxmoe_layer_copy", "dst");
    std::memcpy(dst, t->data(), t->nbytes());
  });
}

const char* mxmoe_layer_description(const mxmoe_layer* l) { return l ? l->description.c_str() : ""; }

void mxmoe_layer_close(mxmoe_layer* l) { delete l; }

}  // extern "C"

// The fused layout's names for a canonical role, from the one alias table (src/layout/alias_table),
// so engines' modules accept exactly what the C++ loader accepts.

extern "C" int mxmoe_fused_aliases(const char* role, char* out, int64_t capacity) {
  return guarded("mxmoe_fused_aliases", [&] {
    require(role, "mxmoe_fused_aliases", "role");
    require(out, "mxmoe_fused_aliases", "out");
    const layout::LayoutRule& rule = layout::layout_rule(MoeLayout::Fused);
    for (const layout::TensorRule& t : rule.tensors) {
      if (std::string(layout::role_name(t.role)) != role) continue;
      std::string joined;
      for (const std::string& a : t.aliases) joined += (joined.empty() ? "" : ",") + a;
      if (static_cast<int64_t>(joined.size()) >= capacity)
        fail(ErrorCode::InvalidArgument, "mxmoe_fused_aliases: the buffer holds " + std::to_string(capacity) + " bytes, " +
                                             std::to_string(joined.size() + 1) + " needed");
      std::memcpy(out, joined.c_str(), joined.size() + 1);
      return;
    }
    fail(ErrorCode::NotFound, std::string("mxmoe_fused_aliases: the fused layout has no role '") + role + "'");
  });
}
