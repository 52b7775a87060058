// Top-k routing for the four RoutingMode's. Conventions the GPU routing follows too:
//  - experts are ranked by their selection score, highest first; at equal scores the lower
//    expert id wins (and, for groups, the lower group id); slot s holds the s-th best expert;
//  - Softmax selects on the logits (softmax is monotone, so this is its top-k without the
//    rounding ties exp() could create); SigmoidGrouped / SqrtSoftplus select on score + bias;
//  - renormalisation divides by the sum of the k chosen weights when that sum is positive;
//  - routed_scaling multiplies the final weights in every mode;
//  - correction_bias and the groups only take part in SigmoidGrouped and SqrtSoftplus.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"

namespace mxmoe::reference {
namespace {

// Indices of the k best of `score[0..n)` among those `allowed` (null: all), best first,
// ties to the lower index.
std::vector<int> top_indices(const float* score, int n, int k, const std::vector<char>* allowed) {
  std::vector<int> idx;
  idx.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    if (!allowed || (*allowed)[static_cast<std::size_t>(i)]) idx.push_back(i);
  auto better = [&](int a, int b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
  k = std::min<int>(k, static_cast<int>(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(static_cast<std::size_t>(k));
  return idx;
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// sqrt(softplus(x)) with softplus(x) = log(1 + e^x) computed without overflow.
float sqrt_softplus(float x) {
  const float sp = x > 20.0f ? x : std::log1p(std::exp(x));
  return std::sqrt(sp);
}

// Experts allowed by grouped top-k: the topk_groups groups with the largest sum of their two
// best selection scores (the one best when a group holds a single expert).
std::vector<char> allowed_by_groups(const float* select, int E, const RoutingConfig& c) {
  const int per_group = E / c.n_groups;
  std::vector<float> group_score(static_cast<std::size_t>(c.n_groups));
  for (int g = 0; g < c.n_groups; ++g) {
    const auto best = top_indices(select + g * per_group, per_group, 2, nullptr);
    float sum = 0.0f;
    for (int i : best) sum += select[g * per_group + i];
    group_score[static_cast<std::size_t>(g)] = sum;
  }
  std::vector<char> allowed(static_cast<std::size_t>(E), 0);
  for (int g : top_indices(group_score.data(), c.n_groups, c.topk_groups, nullptr))
    std::fill(allowed.begin() + g * per_group, allowed.begin() + (g + 1) * per_group, 1);
  return allowed;
}

void finish_weights(float* weights, int k, const RoutingConfig& c, bool renormalize) {
  if (renormalize) {
    float sum = 0.0f;
    for (int s = 0; s < k; ++s) sum += weights[s];
    if (sum > 0.0f)
      for (int s = 0; s < k; ++s) weights[s] /= sum;
  }
  for (int s = 0; s < k; ++s) weights[s] *= c.routed_scaling;
}

void route_token(const float* logit, int E, const RoutingConfig& c, const float* bias, std::int32_t* ids, float* weights) {
  const int k = c.top_k;
  switch (c.mode) {
    case RoutingMode::Softmax: {
      const float m = *std::max_element(logit, logit + E);
      float sum = 0.0f;
      for (int e = 0; e < E; ++e) sum += std::exp(logit[e] - m);
      const auto chosen = top_indices(logit, E, k, nullptr);
      for (int s = 0; s < k; ++s) {
        ids[s] = chosen[static_cast<std::size_t>(s)];
        weights[s] = std::exp(logit[ids[s]] - m) / sum;
      }
      finish_weights(weights, k, c, c.renormalize);
      return;
    }
    case RoutingMode::SoftmaxTopK: {
      const auto chosen = top_indices(logit, E, k, nullptr);
      const float m = logit[chosen[0]];
      float sum = 0.0f;
      for (int s = 0; s < k; ++s) {
        ids[s] = chosen[static_cast<std::size_t>(s)];
        weights[s] = std::exp(logit[ids[s]] - m);
        sum += weights[s];
      }
      for (int s = 0; s < k; ++s) weights[s] /= sum;
      finish_weights(weights, k, c, false);
      return;
    }
    case RoutingMode::SigmoidGrouped:
    case RoutingMode::SqrtSoftplus: {
      std::vector<float> score(static_cast<std::size_t>(E)), select(static_cast<std::size_t>(E));
      for (int e = 0; e < E; ++e) {
        score[e] = c.mode == RoutingMode::SigmoidGrouped ? sigmoid(logit[e]) : sqrt_softplus(logit[e]);
        select[e] = score[e] + (bias ? bias[e] : 0.0f);
      }
      std::vector<char> allowed;
      if (c.n_groups > 1) allowed = allowed_by_groups(select.data(), E, c);
      const auto chosen = top_indices(select.data(), E, k, c.n_groups > 1 ? &allowed : nullptr);
      for (int s = 0; s < k; ++s) {
        ids[s] = chosen[static_cast<std::size_t>(s)];
        weights[s] = score[ids[s]];
      }
      finish_weights(weights, k, c, c.renormalize);
      return;
    }
  }
}

}  // namespace

TopK route(const float* logits, int num_tokens, int num_experts, const RoutingConfig& config, const float* correction_bias) {
  const std::string pre = "reference::route: ";
  config.validate(num_experts);
  if (num_tokens < 0) fail(ErrorCode::InvalidArgument, pre + "num_tokens must be >= 0, got " + std::to_string(num_tokens));
  if (num_tokens > 0 && logits == nullptr) fail(ErrorCode::InvalidArgument, pre + "logits is a null pointer");
  const std::size_t n = static_cast<std::size_t>(num_tokens) * static_cast<std::size_t>(num_experts);
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(logits[i]))
      fail(ErrorCode::InvalidArgument, pre + "logit of token " + std::to_string(i / num_experts) + " expert " +
                                           std::to_string(i % num_experts) + " is not finite (" + std::to_string(logits[i]) + ")");
  if (correction_bias)
    for (int e = 0; e < num_experts; ++e)
      if (!std::isfinite(correction_bias[e]))
        fail(ErrorCode::InvalidArgument, pre + "correction_bias of expert " + std::to_string(e) + " is not finite (" + std::to_string(correction_bias[e]) + ")");

  TopK out;
  out.num_tokens = num_tokens;
  out.top_k = config.top_k;
  out.ids.resize(static_cast<std::size_t>(num_tokens) * config.top_k);
  out.weights.resize(out.ids.size());
  for (int t = 0; t < num_tokens; ++t)
    route_token(logits + static_cast<std::size_t>(t) * num_experts, num_experts, config, correction_bias,
                out.ids.data() + static_cast<std::size_t>(t) * config.top_k, out.weights.data() + static_cast<std::size_t>(t) * config.top_k);
  return out;
}

}  // namespace mxmoe::reference
