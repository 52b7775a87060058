#include "layout/completeness.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "checkpoint/regular_file.hpp"
#include "layout/alias_table.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::layout {
namespace {

namespace fs = std::filesystem;

struct ExpectedCount {
  std::int64_t experts;
  std::string source;  // "config.json 'n_routed_experts'", "router 'P.gate.weight' rows"
};

// The expert count config.json declares, if it is there and says so. A config.json that cannot be
// parsed is not ours to judge (it may hold anything); only a clear integer is used.
std::optional<ExpectedCount> config_experts(const Checkpoint& ckpt) {
  const std::string path = (fs::path(ckpt.directory()) / "config.json").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const nlohmann::json j = nlohmann::json::parse(checkpoint::read_regular_text(path, "config", 16u << 20), nullptr, false);
  if (!j.is_object()) return std::nullopt;
  for (const nlohmann::json* scope : {&j, j.contains("text_config") ? &j["text_config"] : nullptr}) {
    if (!scope || !scope->is_object()) continue;
    for (const char* key : {"n_routed_experts", "num_local_experts", "num_experts"})
      if (scope->contains(key) && (*scope)[key].is_number_integer())
        return ExpectedCount{(*scope)[key].get<std::int64_t>(), "config.json '" + std::string(key) + "' (" + path + ")"};
  }
  return std::nullopt;
}

std::optional<nlohmann::json> config_json(const Checkpoint& ckpt) {
  const std::string path = (fs::path(ckpt.directory()) / "config.json").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(checkpoint::read_regular_text(path, "config", 16u << 20), nullptr, false);
  if (!j.is_object()) return std::nullopt;
  return j;
}

std::optional<ExpectedCount> router_rows(const Checkpoint& ckpt, const MoeLayerRef& ref) {
  for (const auto& rule : layout_rule(ref.layout).tensors) {
    if (rule.role != Role::RouterWeight) continue;
    const auto r = resolve(ckpt, ref.module_prefix, rule);
    if (!r) return std::nullopt;
    const Shape& shape = ckpt.info(r->name).shape;
    if (shape.size() != 2) return std::nullopt;  // the loader names a router of the wrong rank
    return ExpectedCount{shape[0], "router '" + r->name + "' (" + std::to_string(shape[0]) + " rows)"};
  }
  return std::nullopt;
}

// "2, 5, 6 and 7" (at most 16 listed).
std::string list_ids(const std::vector<std::int64_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size() && i < 16; ++i)
    s += (i == 0 ? "" : i + 1 == ids.size() ? " and " : ", ") + std::to_string(ids[i]);
  if (ids.size() > 16) s += " and " + std::to_string(ids.size() - 16) + " more";
  return s;
}

// Where the layer's names were looked for: the anchor pattern and the checkpoint's files.
std::string looked_in(const Checkpoint& ckpt, const MoeLayerRef& ref) {
  const LayoutRule& rule = layout_rule(ref.layout);
  std::string pattern;  // "{e}" kept: it stands for each expert id
  for (const auto& anchor : rule.anchors) pattern += (pattern.empty() ? "'" : " or '") + ref.module_prefix + "experts." + anchor + "'";
  std::string files;
  for (std::size_t i = 0; i < ckpt.files().size() && i < 8; ++i) files += (i ? ", '" : "'") + ckpt.files()[i] + "'";
  if (ckpt.files().size() > 8) files += " and " + std::to_string(ckpt.files().size() - 8) + " more";
  std::string where = "looked for " + pattern + " in " + std::to_string(ckpt.files().size()) + " file(s): " + files;
  if (!ckpt.index_path().empty()) where += ", as listed by '" + ckpt.index_path() + "'";
  return where;
}

}  // namespace

void check_layer_complete(const Checkpoint& ckpt, const MoeLayerRef& ref, const std::set<int>& expert_ids) {
  const std::string layer = "layer " + std::to_string(ref.layer) + " ('" + ref.module_prefix + "experts.', " + moe_layout_name(ref.layout) + ")";
  const bool per_expert = !expert_ids.empty();
  std::vector<std::int64_t> gaps;
  if (per_expert)
    for (int e = 0; e < ref.num_experts; ++e)
      if (!expert_ids.count(e)) gaps.push_back(e);
  if (!gaps.empty())
    fail(ErrorCode::NotFound, layer + ": expert(s) " + list_ids(gaps) + " of 0.." + std::to_string(ref.num_experts - 1) +
                                  " are missing; " + looked_in(ckpt, ref));
  for (const auto& expected : {router_rows(ckpt, ref), config_experts(ckpt)}) {
    if (!expected || expected->experts == ref.num_experts) continue;
    if (per_expert && expected->experts > ref.num_experts) {
      std::vector<std::int64_t> missing;
      for (std::int64_t e = ref.num_experts; e < expected->experts; ++e) missing.push_back(e);
      fail(ErrorCode::NotFound, layer + ": " + expected->source + " gives " + std::to_string(expected->experts) + " experts, but expert(s) " +
                                    list_ids(missing) + " are missing; " + looked_in(ckpt, ref));
    }
    fail(ErrorCode::Shape, layer + ": its tensors hold " + std::to_string(ref.num_experts) + " experts, but " + expected->source + " gives " +
                               std::to_string(expected->experts) + "; " + looked_in(ckpt, ref));
  }
}

DType config_activation_dtype(const Checkpoint& ckpt) {
  const auto j = config_json(ckpt);
  if (!j) return DType::BF16;
  for (const nlohmann::json* scope : {&*j, j->contains("text_config") ? &(*j)["text_config"] : nullptr}) {
    if (!scope || !scope->is_object()) continue;
    for (const char* key : {"torch_dtype", "dtype"})
      if (scope->contains(key) && (*scope)[key].is_string()) return (*scope)[key].get<std::string>() == "float16" ? DType::F16 : DType::BF16;
  }
  return DType::BF16;
}

}  // namespace mxmoe::layout
