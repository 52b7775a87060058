// Small MXFP4 models on disk for the CLI safety tests: one synthetic layer in a layout, written as one
// file or as a folder of shards (with or without model.safetensors.index.json and config.json).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "test_checkpoint_util.hpp"

namespace mxmoe::testing {

using NamedTensors = std::vector<std::pair<std::string, HostTensor>>;

// Layer 4 ("model.layers.4.mlp.") of `experts` synthetic experts, H=64, I=32, stored in `layout`.
inline NamedTensors synthetic_layer(MoeLayout layout, int experts = 4, bool with_router = true) {
  SyntheticSpec spec;
  spec.num_experts = experts;
  spec.hidden = 64;
  spec.inter = 32;
  spec.with_router = with_router;
  spec.seed = 7;
  LoadedMoeLayer l;
  l.weights = make_synthetic_weights(spec);
  l.weights.correction_bias.reset();  // gpt-oss has no place for one
  return moe_layer_tensors(l, layout, "model.layers.4.mlp.");
}

// The tensors dealt round-robin into `shards` files "model-0000i-of-0000n.safetensors" under `dir`;
// returns the shard names. With `index`, a model.safetensors.index.json maps every tensor to its shard.
inline std::vector<std::string> write_shards(const std::string& dir, const NamedTensors& tensors, int shards, bool index) {
  std::vector<NamedTensors> parts(shards);
  for (std::size_t i = 0; i < tensors.size(); ++i) parts[i % shards].push_back(tensors[i]);
  std::vector<std::string> names;
  std::string map;
  for (int s = 0; s < shards; ++s) {
    const std::string name = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    save_safetensors(dir + "/" + name, parts[s]);
    names.push_back(name);
    for (const auto& [t, _] : parts[s]) map += (map.empty() ? "" : ", ") + ("\"" + t + "\": \"" + name + "\"");
  }
  if (index) {
    const std::string json = "{\"metadata\": {}, \"weight_map\": {" + map + "}}";
    write_file(dir + "/model.safetensors.index.json", std::vector<std::uint8_t>(json.begin(), json.end()));
  }
  return names;
}

inline void write_text(const std::string& path, const std::string& text) {
  write_file(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

}  // namespace mxmoe::testing
