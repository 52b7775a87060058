// Fresh random inputs shared by the CPU parallel tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "mxmoe/reference.hpp"

namespace mxmoe::test {

inline std::vector<std::uint16_t> random_hidden(int tokens, int hidden, double std, std::uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<std::uint16_t> x(static_cast<std::size_t>(tokens) * hidden);
  for (auto& v : x) v = formats::float_to_bf16(static_cast<float>(rng.normal() * std));
  return x;
}

// Which slot is masked to -1 ("not on this rank"), on which tokens (index % every == phase).
struct SlotMask {
  int slot, every, phase;
};

// Distinct random experts per token, positive weights, one slot masked on some tokens.
inline TopK random_topk(int tokens, int top_k, int num_experts, std::uint64_t seed, SlotMask mask) {
  SplitMix64 rng(seed);
  TopK t;
  t.num_tokens = tokens;
  t.top_k = top_k;
  for (int i = 0; i < tokens; ++i) {
    std::vector<int> chosen;
    while (static_cast<int>(chosen.size()) < top_k) {
      const int e = static_cast<int>(rng.next() % num_experts);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    for (int s = 0; s < top_k; ++s) {
      t.ids.push_back(s == mask.slot && i % mask.every == mask.phase ? -1 : chosen[s]);
      t.weights.push_back(static_cast<float>(0.1 + rng.uniform()));
    }
  }
  return t;
}

}  // namespace mxmoe::test
