// Model shapes (routed experts only) that the demo, tests and benchmarks share.
#pragma once

#include <string>
#include <vector>

#include "mxmoe/config.hpp"

namespace mxmoe {

struct ModelPreset {
  std::string name;
  int hidden, inter, num_experts, top_k;
  RoutingConfig routing;
  ActivationConfig activation;
  bool biases;
};

const std::vector<ModelPreset>& model_presets();
// Throws mxmoe::Error listing the known names when `name` is not one of them.
const ModelPreset& find_preset(const std::string& name);

}  // namespace mxmoe
