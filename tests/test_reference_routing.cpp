// reference::router_logits and reference::route against float64 recomputations written here,
// plus ties, grouped selection and every input check.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "formats/bf16.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "mxmoe/weights.hpp"

using namespace mxmoe;
using ::testing::HasSubstr;

namespace {

struct RefChoice {
  std::vector<int> ids;
  std::vector<double> weights;
};

// Indices sorted by (score descending, index ascending), restricted to `allowed`.
std::vector<int> ranked(const std::vector<double>& score, const std::vector<bool>& allowed) {
  std::vector<std::pair<double, int>> v;
  for (int i = 0; i < static_cast<int>(score.size()); ++i)
    if (allowed[i]) v.push_back({-score[i], i});
  std::sort(v.begin(), v.end());
  std::vector<int> out;
  for (auto& p : v) out.push_back(p.second);
  return out;
}

// The routing rules of config.hpp / REFERENCE.md, in float64, for one token.
RefChoice ref_route(const float* logit, int E, const RoutingConfig& c, const float* bias) {
  const int k = c.top_k;
  std::vector<double> l(logit, logit + E);
  RefChoice r;
  if (c.mode == RoutingMode::Softmax || c.mode == RoutingMode::SoftmaxTopK) {
    const std::vector<int> order = ranked(l, std::vector<bool>(E, true));
    r.ids.assign(order.begin(), order.begin() + k);
    const double m = l[order[0]];
    double all = 0, chosen = 0;
    for (int e = 0; e < E; ++e) all += std::exp(l[e] - m);
    for (int id : r.ids) chosen += std::exp(l[id] - m);
    const bool over_k = c.mode == RoutingMode::SoftmaxTopK || c.renormalize;
    for (int id : r.ids) r.weights.push_back(std::exp(l[id] - m) / (over_k ? chosen : all) * c.routed_scaling);
    return r;
  }
  std::vector<double> s(E), sel(E);
  for (int e = 0; e < E; ++e) {
    s[e] = c.mode == RoutingMode::SigmoidGrouped ? 1.0 / (1.0 + std::exp(-l[e])) : std::sqrt(std::log1p(std::exp(l[e])));
    sel[e] = s[e] + (bias ? bias[e] : 0.0);
  }
  std::vector<bool> allowed(E, true);
  if (c.n_groups > 1) {
    const int per = E / c.n_groups;
    std::vector<double> gscore(c.n_groups);
    for (int g = 0; g < c.n_groups; ++g) {
      std::vector<double> mine(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(mine.rbegin(), mine.rend());
      gscore[g] = mine[0] + (per > 1 ? mine[1] : 0.0);
    }
    const std::vector<int> gorder = ranked(gscore, std::vector<bool>(c.n_groups, true));
    std::vector<bool> keep(E, false);
    for (int j = 0; j < c.topk_groups; ++j)
      for (int e = gorder[j] * per; e < (gorder[j] + 1) * per; ++e) keep[e] = true;
    allowed = keep;
  }
  const std::vector<int> order = ranked(sel, allowed);
  r.ids.assign(order.begin(), order.begin() + k);
  double sum = 0;
  for (int id : r.ids) sum += s[id];
  for (int id : r.ids) r.weights.push_back(s[id] / (c.renormalize ? sum : 1.0) * c.routed_scaling);
  return r;
}

std::vector<float> random_logits(int n, std::uint32_t seed, float std = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

void expect_matches_reference(const std::vector<float>& logits, int T, int E, const RoutingConfig& c, const float* bias) {
  const TopK got = reference::route(logits.data(), T, E, c, bias);
  ASSERT_EQ(got.num_tokens, T);
  ASSERT_EQ(got.top_k, c.top_k);
  ASSERT_EQ(got.ids.size(), static_cast<std::size_t>(T) * c.top_k);
  ASSERT_EQ(got.weights.size(), got.ids.size());
  for (int t = 0; t < T; ++t) {
    const RefChoice want = ref_route(logits.data() + t * E, E, c, bias);
    for (int s = 0; s < c.top_k; ++s) {
      const float w = got.weights[t * c.top_k + s];
      EXPECT_EQ(got.ids[t * c.top_k + s], want.ids[s]) << routing_mode_name(c.mode) << " token " << t << " slot " << s;
      ASSERT_TRUE(std::isfinite(w));
      // fp32 exp/sum against float64: a few ulps.
      EXPECT_NEAR(w, want.weights[s], 1e-6 * std::max(1.0, std::fabs(want.weights[s])))
          << routing_mode_name(c.mode) << " token " << t << " slot " << s;
    }
  }
}

std::vector<RoutingConfig> configs_for(int E) {
  std::vector<RoutingConfig> v;
  for (int k : {1, 3, E}) {
    v.push_back(RoutingConfig::softmax(k, true));
    v.push_back(RoutingConfig::softmax(k, false));
    v.push_back(RoutingConfig::gpt_oss(k));
    v.push_back(RoutingConfig::deepseek_v3(k, 1, 1, 2.5f));
    v.push_back(RoutingConfig::deepseek_v4(k, 1.5f));
    RoutingConfig v4_unnormalised = RoutingConfig::deepseek_v4(k, 1.0f);
    v4_unnormalised.renormalize = false;
    v.push_back(v4_unnormalised);
  }
  // Grouped: 4 groups, keep 2 (top-k up to the 2*E/4 experts they hold).
  for (int k : {1, 2, E / 2}) {
    v.push_back(RoutingConfig::deepseek_v3(k, 4, 2, 2.5f));
    RoutingConfig g4 = RoutingConfig::deepseek_v4(k, 1.5f);
    g4.n_groups = 4;
    g4.topk_groups = 2;
    v.push_back(g4);
  }
  RoutingConfig scaled = RoutingConfig::softmax(2, true);
  scaled.routed_scaling = 3.0f;
  v.push_back(scaled);
  return v;
}

}  // namespace

TEST(ReferenceRoute, EveryModeMatchesFloat64) {
  for (int E : {8, 16}) {
    const int T = 20;
    const std::vector<float> logits = random_logits(T * E, 100 + E);
    const std::vector<float> bias = random_logits(E, 200 + E, 0.3f);
    for (const RoutingConfig& c : configs_for(E)) {
      expect_matches_reference(logits, T, E, c, nullptr);
      expect_matches_reference(logits, T, E, c, bias.data());
    }
  }
}

TEST(ReferenceRoute, RenormalisedWeightsSumToScaling) {
  const int E = 16, T = 10;
  const std::vector<float> logits = random_logits(T * E, 5);
  const std::vector<float> bias = random_logits(E, 6, 0.5f);
  for (const RoutingConfig& c : {RoutingConfig::softmax(4, true), RoutingConfig::gpt_oss(4), RoutingConfig::deepseek_v3(6, 4, 2, 2.5f),
                                 RoutingConfig::deepseek_v4(6, 1.5f)}) {
    const TopK r = reference::route(logits.data(), T, E, c, bias.data());
    for (int t = 0; t < T; ++t) {
      double sum = 0;
      for (int s = 0; s < c.top_k; ++s) sum += r.weights[t * c.top_k + s];
      EXPECT_NEAR(sum, c.routed_scaling, 1e-5 * c.routed_scaling) << routing_mode_name(c.mode);
    }
  }
}

TEST(ReferenceRoute, TiesGoToTheLowerExpertId) {
  const int E = 8;
  const std::vector<float> flat(E, 0.25f);
  for (const RoutingConfig& c : {RoutingConfig::softmax(3, true), RoutingConfig::gpt_oss(3), RoutingConfig::deepseek_v3(3, 4, 2, 1.0f),
                                 RoutingConfig::deepseek_v4(3, 1.0f)}) {
    const TopK r = reference::route(flat.data(), 1, E, c, nullptr);
    EXPECT_EQ(r.ids, (std::vector<std::int32_t>{0, 1, 2})) << routing_mode_name(c.mode);
    for (float w : r.weights) EXPECT_FLOAT_EQ(w, 1.0f / 3.0f);
  }
  // A tie in the middle of the ranking: 5 and 2 share the best logit, 1 and 6 the next.
  const std::vector<float> logits = {0.0f, 1.0f, 3.0f, -1.0f, 0.5f, 3.0f, 1.0f, -2.0f};
  const TopK r = reference::route(logits.data(), 1, E, RoutingConfig::softmax(3, true), nullptr);
  EXPECT_EQ(r.ids, (std::vector<std::int32_t>{2, 5, 1}));
}

TEST(ReferenceRoute, GroupedSelectionCanDropTheBestExpert) {
  // 4 groups of 2; expert 0 has the best score but its partner is poor, so group 0 (sum of its two
  // best) loses to groups 1 and 2, and expert 0 is not chosen.
  const int E = 8;
  const std::vector<float> logits = {5.0f, -5.0f, 2.0f, 1.9f, 1.5f, 1.4f, -1.0f, -1.2f};
  const RoutingConfig grouped = RoutingConfig::deepseek_v3(2, 4, 2, 1.0f);
  const TopK r = reference::route(logits.data(), 1, E, grouped, nullptr);
  EXPECT_EQ(r.ids, (std::vector<std::int32_t>{2, 3}));
  const TopK flat = reference::route(logits.data(), 1, E, RoutingConfig::deepseek_v3(2, 1, 1, 1.0f), nullptr);
  EXPECT_EQ(flat.ids, (std::vector<std::int32_t>{0, 2}));
  // With top-3 the third pick comes from group 2 (4), never from group 0.
  const TopK r3 = reference::route(logits.data(), 1, E, RoutingConfig::deepseek_v3(3, 4, 2, 1.0f), nullptr);
  EXPECT_EQ(r3.ids, (std::vector<std::int32_t>{2, 3, 4}));
}

TEST(ReferenceRoute, BiasChoosesButDoesNotWeigh) {
  // Expert 6 has a low score; a large correction bias makes it chosen first, with its own unbiased score.
  const int E = 8;
  const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f, 0.2f, -3.0f, 0.1f};
  std::vector<float> bias(E, 0.0f);
  bias[6] = 10.0f;
  RoutingConfig c = RoutingConfig::deepseek_v4(2, 1.0f);
  c.renormalize = false;
  const TopK r = reference::route(logits.data(), 1, E, c, bias.data());
  EXPECT_EQ(r.ids, (std::vector<std::int32_t>{6, 2}));
  EXPECT_NEAR(r.weights[0], std::sqrt(std::log1p(std::exp(-3.0))), 1e-6);
  EXPECT_NEAR(r.weights[1], std::sqrt(std::log1p(std::exp(2.0))), 1e-6);
  // Softmax modes ignore the correction bias.
  const TopK s = reference::route(logits.data(), 1, E, RoutingConfig::softmax(2, true), bias.data());
  EXPECT_EQ(s.ids, (std::vector<std::int32_t>{2, 0}));
}

TEST(ReferenceRoute, ExtremeLogitsStayFinite) {
  const int E = 8;
  const std::vector<float> logits = {80.0f, -80.0f, 200.0f, -200.0f, 0.0f, 30.0f, -30.0f, 1e-30f};
  for (const RoutingConfig& c : {RoutingConfig::softmax(8, false), RoutingConfig::gpt_oss(4), RoutingConfig::deepseek_v3(4, 1, 1, 2.5f),
                                 RoutingConfig::deepseek_v4(8, 1.5f)}) {
    const TopK r = reference::route(logits.data(), 1, E, c, nullptr);
    for (float w : r.weights) EXPECT_TRUE(std::isfinite(w)) << routing_mode_name(c.mode);
    expect_matches_reference(logits, 1, E, c, nullptr);
  }
}

TEST(ReferenceRoute, ZeroTokensGiveAnEmptyResult) {
  const TopK r = reference::route(nullptr, 0, 8, RoutingConfig::softmax(2, true), nullptr);
  EXPECT_EQ(r.num_tokens, 0);
  EXPECT_TRUE(r.ids.empty());
}

TEST(ReferenceRoute, RejectsBadInput) {
  const int E = 8;
  std::vector<float> logits = random_logits(2 * E, 9);
  auto message = [&](const RoutingConfig& c, const float* l, int T, const float* bias) -> std::string {
    try {
      reference::route(l, T, E, c, bias);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_THAT(message(RoutingConfig::softmax(0, true), logits.data(), 2, nullptr), HasSubstr("top_k must be in 1..8, got 0"));
  EXPECT_THAT(message(RoutingConfig::softmax(9, true), logits.data(), 2, nullptr), HasSubstr("top_k must be in 1..8, got 9"));
  EXPECT_THAT(message(RoutingConfig::deepseek_v3(2, 3, 1, 1.0f), logits.data(), 2, nullptr), HasSubstr("n_groups = 3 must divide the expert count 8"));
  EXPECT_THAT(message(RoutingConfig::deepseek_v3(2, 4, 5, 1.0f), logits.data(), 2, nullptr), HasSubstr("topk_groups = 5"));
  EXPECT_THAT(message(RoutingConfig::deepseek_v3(5, 4, 2, 1.0f), logits.data(), 2, nullptr), HasSubstr("exceeds the experts"));
  EXPECT_THAT(message(RoutingConfig::deepseek_v4(2, 0.0f), logits.data(), 2, nullptr), HasSubstr("routed_scaling"));
  EXPECT_THAT(message(RoutingConfig::softmax(2, true), nullptr, 2, nullptr), HasSubstr("logits is a null pointer"));
  EXPECT_THAT(message(RoutingConfig::softmax(2, true), logits.data(), -1, nullptr), HasSubstr("num_tokens must be >= 0, got -1"));
  logits[E + 3] = NAN;
  EXPECT_THAT(message(RoutingConfig::softmax(2, true), logits.data(), 2, nullptr), HasSubstr("logit of token 1 expert 3 is not finite"));
  logits[E + 3] = 0.0f;
  std::vector<float> bias(E, 0.0f);
  bias[5] = INFINITY;
  EXPECT_THAT(message(RoutingConfig::deepseek_v4(2, 1.0f), logits.data(), 2, bias.data()), HasSubstr("correction_bias of expert 5 is not finite"));
  EXPECT_THROW(reference::route(logits.data(), 2, 0, RoutingConfig::softmax(1, true), nullptr), Error);
}

void expect_logits_match_float64(const CanonicalMoeWeights& w, int T, std::uint32_t seed) {
  const int E = w.num_experts, H = w.hidden;
  const std::vector<std::uint16_t> x = verify::random_hidden(T, H, seed);
  const std::vector<float> got = reference::router_logits(w, x.data(), T);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(T * E));
  const float* r = w.router_weight->as<float>();
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) {
      double want = 0, mag = 0;
      for (int h = 0; h < H; ++h) {
        const double xv = formats::bf16_to_float(x[t * H + h]);
        want += xv * r[e * H + h];
        mag += std::fabs(xv * r[e * H + h]);
      }
      // fp32 accumulation of H <= 96 products: error well under 1e-6 of the sum of magnitudes.
      EXPECT_NEAR(got[t * E + e], want, 1e-6 * mag) << "H " << H << " token " << t << " expert " << e;
    }
}

TEST(ReferenceRouterLogits, MatchesFloat64) {
  SyntheticSpec spec;
  spec.num_experts = 8;
  spec.hidden = 96;
  spec.inter = 32;
  spec.seed = 11;
  expect_logits_match_float64(make_synthetic_weights(spec), 13, 3);
  // The router alone needs no MXFP4 grouping: H = 40 is not a multiple of 16 either.
  CanonicalMoeWeights router_only;
  router_only.num_experts = 5;
  router_only.hidden = 40;
  router_only.router_weight = HostTensor::zeros(DType::F32, {5, 40});
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 0.2f);
  for (int i = 0; i < 5 * 40; ++i) router_only.router_weight->mutable_as<float>()[i] = nd(rng);
  expect_logits_match_float64(router_only, 7, 5);
}

TEST(ReferenceRouterLogits, RejectsBadInput) {
  SyntheticSpec spec;
  spec.with_router = false;
  const CanonicalMoeWeights no_router = make_synthetic_weights(spec);
  std::vector<std::uint16_t> x(spec.hidden, 0x3f80);
  try {
    reference::router_logits(no_router, x.data(), 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("the weights have no router_weight"));
  }
  spec.with_router = true;
  CanonicalMoeWeights w = make_synthetic_weights(spec);
  try {
    reference::router_logits(w, nullptr, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("hidden is a null pointer"));
  }
  try {
    reference::router_logits(w, x.data(), -2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("num_tokens must be >= 0, got -2"));
  }
  w.router_weight = HostTensor::zeros(DType::F32, {spec.num_experts, spec.hidden + 32});
  try {
    reference::router_logits(w, x.data(), 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("router_weight has shape [8, 288], expected [8, 256]"));
  }
  EXPECT_TRUE(reference::router_logits(make_synthetic_weights(spec), nullptr, 0).empty());
}

// gpt-oss's router.bias is added to every token's logits, after the fp32 dot product.
TEST(RouterLogits, LogitBiasIsAddedToEveryToken) {
  SyntheticSpec spec;
  spec.num_experts = 6;
  spec.hidden = 64;
  spec.inter = 32;
  const CanonicalMoeWeights w = make_synthetic_weights(spec);
  const int T = 3;
  const std::vector<std::uint16_t> x = verify::random_hidden(T, spec.hidden, 5);
  const std::vector<float> bias = verify::random_logits(1, spec.num_experts, 6);
  const std::vector<float> plain = reference::router_logits(w, x.data(), T);
  const std::vector<float> biased = reference::router_logits(w, x.data(), T, bias.data());
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < spec.num_experts; ++e) {
      EXPECT_EQ(biased[t * spec.num_experts + e], plain[t * spec.num_experts + e] + bias[e]) << t << " " << e;
      EXPECT_NE(biased[t * spec.num_experts + e], plain[t * spec.num_experts + e]);
    }
}
