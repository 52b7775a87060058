// Finding MoE layers by their names: "<module path>experts.<anchor>", the module path holding
// "layers.<L>." somewhere (any prefix before it, any module between it and "experts.").
#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "layout/alias_table.hpp"
#include "layout/completeness.hpp"
#include "layout/layer_dtypes.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {
namespace {

bool is_packed(const TensorInfo& t) { return layout::is_packed_dtype(t.dtype_name); }
bool is_float(const TensorInfo& t) { return layout::is_float_dtype_name(t.dtype_name); }

// The layer number of the last "layers.<digits>." in `head` (at its start or after a '.'), or -1.
int layer_number(const std::string& head) {
  for (std::size_t pos = head.rfind("layers."); pos != std::string::npos; pos = pos ? head.rfind("layers.", pos - 1) : std::string::npos) {
    if (pos > 0 && head[pos - 1] != '.') continue;
    std::size_t i = pos + 7, j = i;
    while (j < head.size() && std::isdigit(static_cast<unsigned char>(head[j]))) ++j;
    if (j == i || j - i > 6 || j >= head.size() || head[j] != '.') continue;
    return std::stoi(head.substr(i, j - i));
  }
  return -1;
}

// Whether `tail` (the name after "experts.") matches `anchor`; the expert index for "{e}." anchors.
bool matches_anchor(const std::string& tail, const std::string& anchor, int* expert) {
  const std::string marker = "{e}.";
  if (anchor.compare(0, marker.size(), marker) != 0) {
    *expert = -1;
    return tail == anchor;
  }
  std::size_t j = 0;
  while (j < tail.size() && std::isdigit(static_cast<unsigned char>(tail[j]))) ++j;
  if (j == 0 || j > 6 || j >= tail.size() || tail[j] != '.') return false;
  if (tail.compare(j + 1, std::string::npos, anchor, marker.size(), std::string::npos) != 0) return false;
  *expert = std::stoi(tail.substr(0, j));
  return true;
}

}  // namespace

const char* moe_layout_name(MoeLayout layout) { return layout::layout_rule(layout).name; }

bool layout_is_quantized(MoeLayout layout) { return layout::layout_rule(layout).quantized; }

MoeLayout parse_mxfp4_layout(const std::string& name) {
  std::string known;
  for (const auto& r : layout::layout_table()) {
    if (!r.quantized) continue;
    if (name == r.name) return r.layout;
    known += known.empty() ? r.name : std::string(", ") + r.name;
  }
  fail(ErrorCode::InvalidArgument, "unknown MXFP4 layout '" + name + "' (known: " + known + ")");
}

std::vector<MoeLayerRef> find_moe_layers(const Checkpoint& ckpt) {
  struct Found {
    MoeLayerRef ref;
    std::set<int> experts;
    std::int64_t first_dim = 0;
  };
  std::map<std::pair<std::string, MoeLayout>, Found> found;
  for (const auto& name : ckpt.tensor_names()) {
    const auto pos = name.rfind("experts.");
    if (pos == std::string::npos || (pos > 0 && name[pos - 1] != '.')) continue;
    const std::string head = name.substr(0, pos), tail = name.substr(pos + 8);
    const int layer = layer_number(head);
    if (layer < 0) continue;
    const TensorInfo& info = ckpt.info(name);
    for (const auto& rule : layout::layout_table()) {
      for (const auto& anchor : rule.anchors) {
        int expert = -1;
        if (!matches_anchor(tail, anchor, &expert)) continue;
        // The anchor's dtype tells a quantized layer from a dense one; a dtype that is neither is not
        // silently skipped (the layer would vanish from the listing): it is named.
        if (!is_packed(info) && !is_float(info))
          fail(ErrorCode::DType, "checkpoint '" + ckpt.path() + "': tensor '" + name + "' (the weights of an MoE layer) has dtype " +
                                     info.dtype_name + "; expected packed E2M1 (U8, I8 or F4) for an MXFP4 layer or BF16, F16 or F32 for one to quantize");
        if (rule.quantized ? !is_packed(info) : !is_float(info)) continue;
        Found& f = found[{head, rule.layout}];
        f.ref.layer = layer;
        f.ref.layout = rule.layout;
        f.ref.module_prefix = head;
        if (expert >= 0) f.experts.insert(expert);
        else f.first_dim = info.shape.empty() ? 0 : info.shape[0];
      }
    }
  }
  // One module path found both quantized and dense under a shared anchor ("{e}.w1.weight" of dsv4 and
  // dense-per-expert): an MXFP4 layer with some experts left in bf16. It is one layer, the quantized
  // one, whose loader then names the bf16 experts (layout/layer_dtypes.hpp).
  for (auto it = found.begin(); it != found.end();) {
    const auto& dense = layout::layout_rule(it->first.second);
    auto twin = found.end();
    for (const auto& rule : layout::layout_table()) {
      if (dense.quantized || !rule.quantized) continue;
      for (const auto& a : rule.anchors)
        if (std::find(dense.anchors.begin(), dense.anchors.end(), a) != dense.anchors.end() && found.count({it->first.first, rule.layout}))
          twin = found.find({it->first.first, rule.layout});
    }
    if (twin == found.end()) {
      ++it;
      continue;
    }
    twin->second.experts.insert(it->second.experts.begin(), it->second.experts.end());
    it = found.erase(it);
  }
  std::vector<MoeLayerRef> layers;
  for (auto& [key, f] : found) {
    f.ref.num_experts = f.experts.empty() ? static_cast<int>(std::min<std::int64_t>(f.first_dim, 1 << 30))
                                          : *f.experts.rbegin() + 1;
    layout::check_layer_complete(ckpt, f.ref, f.experts);  // no gap; agrees with the router and config.json
    layers.push_back(f.ref);
  }
  std::stable_sort(layers.begin(), layers.end(), [](const MoeLayerRef& a, const MoeLayerRef& b) { return a.layer < b.layer; });
  return layers;
}

MoeLayerRef find_moe_layer(const Checkpoint& ckpt, int layer) {
  const auto layers = find_moe_layers(ckpt);
  std::vector<MoeLayerRef> hits;
  std::string known;
  for (const auto& r : layers) {
    if (r.layer == layer) hits.push_back(r);
    known += (known.empty() ? "" : ", ") + std::to_string(r.layer);
  }
  if (hits.empty()) {
    if (layers.empty()) fail(ErrorCode::NotFound, "checkpoint '" + ckpt.path() + "' holds no MoE layer in a known layout");
    fail(ErrorCode::NotFound, "checkpoint '" + ckpt.path() + "' has no MoE layer " + std::to_string(layer) + " (layers: " + known + ")");
  }
  if (hits.size() > 1) {
    std::string which;
    for (const auto& h : hits) which += " '" + h.module_prefix + "experts.' (" + moe_layout_name(h.layout) + ")";
    fail(ErrorCode::InvalidArgument, "checkpoint '" + ckpt.path() + "': layer " + std::to_string(layer) + " is ambiguous:" + which);
  }
  return hits.front();
}

}  // namespace mxmoe
