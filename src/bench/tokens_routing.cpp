// The bench's token sweep and its synthetic routing.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/random.hpp"
#include "mxmoe/bench.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {

std::vector<int> default_token_sweep() { return {1, 4, 16, 64, 256, 1024, 4096, 16384}; }

std::vector<int> parse_token_list(const std::string& text, int max_tokens) {
  std::vector<int> out;
  std::set<int> seen;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long value = 0;
    try {
      value = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size())
      fail(ErrorCode::InvalidArgument, "--tokens: '" + item + "' is not an integer (expected a list like 1,4,16)");
    if (value < 1 || value > max_tokens)
      fail(ErrorCode::InvalidArgument, "--tokens: " + item + " is outside 1.." + std::to_string(max_tokens));
    if (!seen.insert(static_cast<int>(value)).second) fail(ErrorCode::InvalidArgument, "--tokens: " + item + " is given twice");
    out.push_back(static_cast<int>(value));
  }
  if (out.empty()) fail(ErrorCode::InvalidArgument, "--tokens: empty list (expected a list like 1,4,16)");
  return out;
}

TopK bench_routing(int num_tokens, int num_experts, int top_k, double skew, std::uint64_t seed) {
  if (num_tokens <= 0 || num_experts <= 0 || top_k <= 0 || top_k > num_experts)
    fail(ErrorCode::InvalidArgument, "bench routing: need T >= 1 and 1 <= k <= E, got T=" + std::to_string(num_tokens) +
                                         " E=" + std::to_string(num_experts) + " k=" + std::to_string(top_k));
  if (!(skew >= 0.0) || !std::isfinite(skew))
    fail(ErrorCode::InvalidArgument, "bench routing: skew must be >= 0, got " + std::to_string(skew));
  TopK r;
  r.num_tokens = num_tokens;
  r.top_k = top_k;
  r.ids.resize(static_cast<std::size_t>(num_tokens) * top_k);
  r.weights.resize(r.ids.size());
  SplitMix64 rng(stream_seed(seed, static_cast<std::uint64_t>(num_tokens)));
  std::vector<double> logits(static_cast<std::size_t>(num_experts));
  std::vector<int> order(logits.size());
  for (int t = 0; t < num_tokens; ++t) {
    for (int e = 0; e < num_experts; ++e) logits[e] = rng.normal() - skew * std::log1p(static_cast<double>(e));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    double sum = 0.0;
    for (int s = 0; s < top_k; ++s) sum += std::exp(logits[order[s]] - logits[order[0]]);
    for (int s = 0; s < top_k; ++s) {
      const std::size_t i = static_cast<std::size_t>(t) * top_k + s;
      r.ids[i] = order[s];
      r.weights[i] = static_cast<float>(std::exp(logits[order[s]] - logits[order[0]]) / sum);
    }
  }
  return r;
}

}  // namespace mxmoe::bench
