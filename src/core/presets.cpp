#include "mxmoe/presets.hpp"

#include "mxmoe/error.hpp"

namespace mxmoe {

const std::vector<ModelPreset>& model_presets() {
  // Shapes and routing from ../shared/REFERENCE.md.
  static const std::vector<ModelPreset> presets = {
      {"dsv4-flash", 4096, 2048, 256, 6, RoutingConfig::deepseek_v4(6, 1.5f), ActivationConfig::clamped_silu_mul(10.0f), false},
      {"dsv4-pro", 7168, 3072, 384, 6, RoutingConfig::deepseek_v4(6, 2.5f), ActivationConfig::clamped_silu_mul(10.0f), false},
      {"dsv3", 7168, 2048, 256, 8, RoutingConfig::deepseek_v3(8, 8, 4, 2.5f), ActivationConfig::silu_mul(), false},
      {"gpt-oss-120b", 2880, 2880, 128, 4, RoutingConfig::gpt_oss(4), ActivationConfig::gpt_oss(), true},
      {"gpt-oss-20b", 2880, 2880, 32, 4, RoutingConfig::gpt_oss(4), ActivationConfig::gpt_oss(), true},
      {"qwen3-30b", 2048, 768, 128, 8, RoutingConfig::softmax(8, true), ActivationConfig::silu_mul(), false},
  };
  return presets;
}

const ModelPreset& find_preset(const std::string& name) {
  std::string known;
  for (const auto& p : model_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  fail(ErrorCode::InvalidArgument, "unknown model preset '" + name + "' (known: " + known + ")");
}

}  // namespace mxmoe
