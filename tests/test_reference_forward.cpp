// reference::moe_forward (fp32) and reference::moe_forward_f64 against a float64 model written
// here from the definitions alone (its own E2M1/E8M0 decode, naive loops), on fresh random data.
//
// Tolerance: the oracle rounds the intermediate a and the output to bf16 (8 significant bits,
// unit roundoff 2^-9 ~ 2e-3); both roundings have random signs, so the relative Frobenius error
// against the unrounded float64 model is ~2e-3 to 4e-3, far above fp32 accumulation error
// (~1e-6). We require < 1e-2; a wrong bias, clamp, scale, nibble order or weight moves it to O(1).
// Element-wise, no output may differ from the float64 model by more than 3e-2 of the output's rms
// (one wrong column would), and where the result is exact (skipped ids, weight splitting, thread
// count, batching) we compare bit for bit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "formats/bf16.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"
#include "test_util.hpp"
#include "mxmoe/verify.hpp"
#include "mxmoe/weights.hpp"
#include "reference/moe_forward_batches.hpp"

using namespace mxmoe;
using ::testing::HasSubstr;

using mxmoe::test::act_f64;
using mxmoe::test::e2m1_value;
using mxmoe::test::synthetic_weights;

namespace {

// ---- the float64 model -------------------------------------------------------------------------

// Dense [rows, K] doubles of expert e of a packed MXFP4 tensor [E, rows, K/2] + scales [E, rows, K/32].
std::vector<double> dense_expert(const HostTensor& packed, const HostTensor& scales, int e, int rows, int K) {
  std::vector<double> m(static_cast<std::size_t>(rows) * K);
  const std::uint8_t* p = packed.as<std::uint8_t>() + static_cast<std::size_t>(e) * rows * K / 2;
  const std::uint8_t* s = scales.as<std::uint8_t>() + static_cast<std::size_t>(e) * rows * K / 32;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < K; ++c) {
      const std::uint8_t byte = p[r * K / 2 + c / 2];
      const unsigned nib = c % 2 ? byte >> 4 : byte & 15u;
      m[static_cast<std::size_t>(r) * K + c] = e2m1_value(nib) * std::pow(2.0, s[r * K / 32 + c / 32] - 127.0);
    }
  return m;
}


// out [T, H] in double; `clamp_hits` counts gate/up values the clamp changed.
std::vector<double> model_f64(const CanonicalMoeWeights& w, const std::vector<std::uint16_t>& x, int T, const TopK& tk,
                              const ActivationConfig& act, int* clamp_hits = nullptr, bool round_intermediate = false) {
  const int H = w.hidden, I = w.inter, k = tk.top_k;
  std::vector<double> out(static_cast<std::size_t>(T) * H, 0.0);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < k; ++s) {
      const int e = tk.ids[t * k + s];
      if (e < 0) continue;
      const std::vector<double> w13 = dense_expert(w.w13, w.w13_scale, e, 2 * I, H);
      const std::vector<double> w2 = dense_expert(w.w2, w.w2_scale, e, H, I);
      std::vector<double> h(2 * I), a(I);
      for (int r = 0; r < 2 * I; ++r) {
        h[r] = w.w13_bias ? w.w13_bias->as<float>()[e * 2 * I + r] : 0.0;
        for (int c = 0; c < H; ++c) h[r] += w13[static_cast<std::size_t>(r) * H + c] * formats::bf16_to_float(x[t * H + c]);
      }
      for (int i = 0; i < I; ++i) {
        a[i] = act_f64(h[i], h[I + i], act);
        if (round_intermediate) a[i] = formats::round_to_bf16(static_cast<float>(a[i]));
        if (clamp_hits && act.kind != ActivationKind::SiluMul)
          *clamp_hits += (h[i] > act.limit) + (std::fabs(h[I + i]) > act.limit);
      }
      for (int r = 0; r < H; ++r) {
        double y = w.w2_bias ? w.w2_bias->as<float>()[e * H + r] : 0.0;
        for (int i = 0; i < I; ++i) y += w2[static_cast<std::size_t>(r) * I + i] * a[i];
        out[t * H + r] += tk.weights[t * k + s] * y;
      }
    }
  return out;
}

// ---- helpers -----------------------------------------------------------------------------------

// Largest |got - want| divided by the rms of want.
double max_error_over_rms(const std::vector<std::uint16_t>& got, const std::vector<double>& want) {
  double n = 0, worst = 0;
  for (double v : want) n += v * v;
  const double rms = std::sqrt(n / static_cast<double>(want.size()));
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(formats::bf16_to_float(got[i]) - want[i]);
    if (std::isnan(d)) return NAN;
    worst = std::max(worst, d);
  }
  return worst / rms;
}

using verify::random_topk;
using verify::random_hidden;
using verify::relative_error;


void expect_close(const std::vector<std::uint16_t>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::uint16_t v : got) ASSERT_TRUE(std::isfinite(formats::bf16_to_float(v))) << what;
  EXPECT_LT(relative_error(got, want), 1e-2) << what;
  EXPECT_LT(max_error_over_rms(got, want), 3e-2) << what;
}

std::string label(const ActivationConfig& a, bool biases, int I, int k) {
  return std::string(activation_kind_name(a.kind)) + (biases ? " +bias" : "") + " I=" + std::to_string(I) + " k=" + std::to_string(k);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

// ---- agreement with the float64 model ------------------------------------------------------

TEST(ReferenceForward, EveryActivationWithAndWithoutBiasesMatchesFloat64) {
  // weight_std 0.25 puts gate/up values around +-4 so limits 3 (clamped) and 2.5 (gpt-oss) bite.
  const std::vector<ActivationConfig> acts = {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(3.0f),
                                              ActivationConfig::gpt_oss(1.702f, 2.5f)};
  const int E = 8, H = 64;
  std::uint32_t seed = 1;
  for (const ActivationConfig& act : acts)
    for (bool biases : {false, true})
      for (int I : {32, 64, 96}) {
        const int T = 20, k = 1 + static_cast<int>(seed % 3) * 3;  // k = 1, 4, 7
        const CanonicalMoeWeights w = synthetic_weights(E, H, I, biases, seed, 0.25f);
        const auto x = random_hidden(T, H, seed + 100);
        const TopK tk = random_topk(T, E, k, seed + 200, verify::TopKMask::dropping(0.15));
        int clamp_hits = 0;
        const std::vector<double> want = model_f64(w, x, T, tk, act, &clamp_hits);
        expect_close(reference::moe_forward(w, x.data(), T, tk, act, 2), want, label(act, biases, I, k));
        if (act.kind != ActivationKind::SiluMul) {
          EXPECT_GT(clamp_hits, 0) << "the clamp never acted: " << label(act, biases, I, k);
        }
        ++seed;
      }
}

TEST(ReferenceForward, ClampIsNotIgnored) {
  // The same problem with and without the clamp must differ by far more than the tolerance.
  const int E = 4, H = 64, I = 64, T = 8;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, false, 5, 0.25f);
  const auto x = random_hidden(T, H, 6);
  const TopK tk = random_topk(T, E, 2, 7);
  const auto clamped = reference::moe_forward(w, x.data(), T, tk, ActivationConfig::clamped_silu_mul(1.0f));
  EXPECT_GT(relative_error(clamped, model_f64(w, x, T, tk, ActivationConfig::silu_mul())), 0.1);
  EXPECT_LT(relative_error(clamped, model_f64(w, x, T, tk, ActivationConfig::clamped_silu_mul(1.0f))), 1e-2);
}

TEST(ReferenceForward, EveryRoutingModeEndToEnd) {
  const int E = 8, H = 64, I = 64, T = 17;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 21);
  const auto x = random_hidden(T, H, 22);
  const std::vector<float> logits = reference::router_logits(w, x.data(), T);
  for (const RoutingConfig& c : {RoutingConfig::softmax(2, true), RoutingConfig::softmax(E, false), RoutingConfig::gpt_oss(4),
                                 RoutingConfig::deepseek_v3(3, 4, 2, 2.5f), RoutingConfig::deepseek_v4(6, 1.5f),
                                 RoutingConfig::deepseek_v4(1, 1.5f)}) {
    const TopK tk = reference::route(logits.data(), T, E, c, w.correction_bias->as<float>());
    const auto act = ActivationConfig::clamped_silu_mul(10.0f);
    expect_close(reference::moe_forward(w, x.data(), T, tk, act), model_f64(w, x, T, tk, act), routing_mode_name(c.mode));
  }
}

TEST(ReferenceForward, TopKEqualToExpertCountAndDuplicates) {
  const int E = 8, H = 64, I = 32, T = 5;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 31);
  const auto x = random_hidden(T, H, 32);
  TopK tk = random_topk(T, E, E, 33);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < E; ++s) tk.ids[t * E + s] = (s + t) % E;  // every expert once per token
  tk.ids[3] = tk.ids[4];                                           // and a duplicate in token 0
  const auto act = ActivationConfig::gpt_oss();
  expect_close(reference::moe_forward(w, x.data(), T, tk, act), model_f64(w, x, T, tk, act), "top_k = E");
}

TEST(ReferenceForward, IntermediateIsRoundedToBf16) {
  // Against the float64 model that also rounds a to bf16, the oracle's output is its bf16 rounding
  // for nearly every element: the fp32 sums differ from the float64 ones by ~1e-7 relative, which
  // flips a rounding only near a tie. Without the intermediate rounding, most elements would differ.
  const int E = 8, H = 128, I = 96, T = 12;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 131);
  const auto x = random_hidden(T, H, 132);
  const TopK tk = random_topk(T, E, 3, 133);
  const auto act = ActivationConfig::silu_mul();
  const std::vector<double> want = model_f64(w, x, T, tk, act, nullptr, true);
  const auto got = reference::moe_forward(w, x.data(), T, tk, act);
  int same = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const float g = formats::bf16_to_float(got[i]);
    same += g == formats::round_to_bf16(static_cast<float>(want[i]));
    EXPECT_NEAR(g, want[i], std::fabs(want[i]) * 0x1p-8 + 1e-6) << "element " << i;  // within one bf16 ulp
  }
  EXPECT_GT(same, static_cast<int>(0.95 * want.size()));
}

TEST(ReferenceFloat64, MatchesTheTestModel) {
  const int E = 8, H = 96, I = 64, T = 9;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 41, 0.25f);
  const auto x = random_hidden(T, H, 42);
  const TopK tk = random_topk(T, E, 3, 43, verify::TopKMask::dropping(0.2));
  for (const ActivationConfig& act : {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(3.0f), ActivationConfig::gpt_oss(1.702f, 2.0f)}) {
    const std::vector<double> all = model_f64(w, x, T, tk, act);
    const std::vector<int> rows = {7, 0, 4};
    const std::vector<double> got = reference::moe_forward_f64(w, x.data(), T, tk, act, rows, 2);
    ASSERT_EQ(got.size(), rows.size() * H);
    for (std::size_t j = 0; j < rows.size(); ++j)
      for (int h = 0; h < H; ++h) {
        const double want = all[rows[j] * H + h];
        EXPECT_NEAR(got[j * H + h], want, 1e-12 * (1.0 + std::fabs(want))) << "row " << rows[j] << " h " << h;
      }
  }
}

// ---- exact properties ------------------------------------------------------------------------

TEST(ReferenceForward, SkippedIdsContributeExactlyNothing) {
  const int E = 8, H = 64, I = 32, T = 6, k = 3;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 51);
  const auto x = random_hidden(T, H, 52);
  TopK tk = random_topk(T, E, k, 53);
  for (int s = 0; s < k; ++s) tk.ids[2 * k + s] = -1;  // token 2: nothing on this rank
  const auto act = ActivationConfig::silu_mul();
  const auto out = reference::moe_forward(w, x.data(), T, tk, act);
  for (int h = 0; h < H; ++h) EXPECT_EQ(out[2 * H + h], 0) << "h " << h;  // +0.0 exactly, biases included
  // Token 4 with its middle slot skipped equals token 4 routed to the other two slots only.
  TopK two = tk;
  two.ids[4 * k + 1] = -1;
  TopK packed{1, 2, {tk.ids[4 * k], tk.ids[4 * k + 2]}, {tk.weights[4 * k], tk.weights[4 * k + 2]}};
  const auto a = reference::moe_forward(w, x.data(), T, two, act);
  const auto b = reference::moe_forward(w, x.data() + 4 * H, 1, packed, act);
  for (int h = 0; h < H; ++h) EXPECT_EQ(a[4 * H + h], b[h]) << "h " << h;
  expect_close(a, model_f64(w, x, T, two, act), "with -1 ids");
}

TEST(ReferenceForward, ResultDoesNotDependOnThreadsOrBatch) {
  const int E = 8, H = 128, I = 64, T = 20, k = 4;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 61);
  const auto x = random_hidden(T, H, 62);
  const TopK tk = random_topk(T, E, k, 63, verify::TopKMask::dropping(0.1));
  const auto act = ActivationConfig::clamped_silu_mul(10.0f);
  const auto one = reference::moe_forward(w, x.data(), T, tk, act, 1);
  EXPECT_EQ(one, reference::moe_forward(w, x.data(), T, tk, act, 2));
  EXPECT_EQ(one, reference::moe_forward(w, x.data(), T, tk, act, 7));
  EXPECT_EQ(one, reference::moe_forward(w, x.data(), T, tk, act, 0));
  // Several token batches (1, 3 and 7 tokens of scratch) give the same bits as one.
  const std::size_t per_token = static_cast<std::size_t>(k) * (2 * H + 3 * I) * sizeof(float);
  for (std::size_t tokens_per_batch : {1, 3, 7})
    EXPECT_EQ(one, reference::detail::moe_forward_in_batches(w, x.data(), T, tk, act, 2, tokens_per_batch * per_token))
        << tokens_per_batch << " tokens per batch";
  // Token 13 alone gives the same bits as inside the batch.
  TopK single{1, k, {tk.ids.begin() + 13 * k, tk.ids.begin() + 14 * k}, {tk.weights.begin() + 13 * k, tk.weights.begin() + 14 * k}};
  const auto alone = reference::moe_forward(w, x.data() + 13 * H, 1, single, act, 2);
  for (int h = 0; h < H; ++h) EXPECT_EQ(alone[h], one[13 * H + h]) << "h " << h;
}

TEST(ReferenceForward, SplittingASlotWeightIsExact) {
  // One slot of weight w and two slots of the same expert with w/2 each give identical bits
  // (w/2 * y + w/2 * y == w * y exactly in binary floating point).
  const int E = 4, H = 64, I = 32;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 71);
  const auto x = random_hidden(1, H, 72);
  const TopK one{1, 1, {2}, {0.75f}};
  const TopK split{1, 2, {2, 2}, {0.375f, 0.375f}};
  const auto act = ActivationConfig::silu_mul();
  EXPECT_EQ(reference::moe_forward(w, x.data(), 1, one, act), reference::moe_forward(w, x.data(), 1, split, act));
}

TEST(ReferenceForward, ZeroTokensGiveAnEmptyResult) {
  const CanonicalMoeWeights w = synthetic_weights(4, 64, 32, false, 81);
  const TopK none{0, 2, {}, {}};
  EXPECT_TRUE(reference::moe_forward(w, nullptr, 0, none, ActivationConfig::silu_mul()).empty());
}

TEST(ReferenceForward, NanNeverPasses) {
  const int E = 4, H = 64, I = 32, T = 3;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, false, 91);
  auto x = random_hidden(T, H, 92);
  const TopK tk = random_topk(T, E, 2, 93);
  const auto act = ActivationConfig::clamped_silu_mul(10.0f);
  const std::vector<double> want = model_f64(w, x, T, tk, act);
  x[1 * H + 17] = 0x7fc0;  // a NaN in token 1's hidden state
  const auto out = reference::moe_forward(w, x.data(), T, tk, act);
  for (int h = 0; h < H; ++h) {
    EXPECT_TRUE(std::isnan(formats::bf16_to_float(out[1 * H + h]))) << "the clamp must not hide a NaN, h " << h;
    EXPECT_TRUE(std::isfinite(formats::bf16_to_float(out[0 * H + h])));
  }
  // The comparison helpers of this file fail on NaN.
  EXPECT_FALSE(relative_error(out, want) < 1e-2);
  EXPECT_FALSE(max_error_over_rms(out, want) < 3e-2);
}

// ---- bad input -------------------------------------------------------------------------------

TEST(ReferenceForward, RejectsBadIds) {
  const int E = 8, H = 64, I = 32, T = 3, k = 2;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, false, 101);
  const auto x = random_hidden(T, H, 102);
  const auto act = ActivationConfig::silu_mul();
  TopK tk = random_topk(T, E, k, 103);
  tk.ids[1 * k + 1] = 300;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }),
              HasSubstr("token 1 slot 1: expert id 300 is outside -1..7"));
  EXPECT_THAT(error_of([&] { reference::moe_forward_f64(w, x.data(), T, tk, act, {0}); }),
              HasSubstr("token 1 slot 1: expert id 300 is outside -1..7"));
  tk.ids[1 * k + 1] = -2;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }),
              HasSubstr("token 1 slot 1: expert id -2 is outside -1..7"));
  tk.ids[1 * k + 1] = 8;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }), HasSubstr("expert id 8 is outside"));
  tk.ids[1 * k + 1] = 0;
  tk.weights[2 * k] = NAN;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }),
              HasSubstr("token 2 slot 0: routing weight is not finite"));
}

TEST(ReferenceForward, RejectsBadShapesAndPointers) {
  const int E = 8, H = 64, I = 32, T = 3, k = 2;
  const CanonicalMoeWeights w = synthetic_weights(E, H, I, false, 111);
  const auto x = random_hidden(T, H, 112);
  const auto act = ActivationConfig::silu_mul();
  const TopK good = random_topk(T, E, k, 113);
  TopK tk = good;
  tk.ids.pop_back();
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }),
              HasSubstr("topk.ids has 5 entries, expected T*k = 3*2 = 6"));
  tk = good;
  tk.weights.push_back(1.0f);
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }), HasSubstr("topk.weights has 7 entries"));
  tk = good;
  tk.num_tokens = 4;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }), HasSubstr("topk.num_tokens is 4, expected num_tokens = 3"));
  tk = good;
  tk.top_k = 0;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }), HasSubstr("topk.top_k must be >= 1, got 0"));
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, nullptr, T, good, act); }), HasSubstr("hidden is a null pointer"));
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), -1, good, act); }), HasSubstr("num_tokens must be >= 0, got -1"));
  EXPECT_THAT(error_of([&] { reference::moe_forward_f64(w, x.data(), T, good, act, {0, 3}); }),
              HasSubstr("token_indices[1] = 3 is outside 0..2"));
}

TEST(ReferenceForward, RejectsBadActivationAndWeights) {
  const int E = 8, H = 64, I = 32, T = 2;
  CanonicalMoeWeights w = synthetic_weights(E, H, I, true, 121);
  const auto x = random_hidden(T, H, 122);
  const TopK tk = random_topk(T, E, 2, 123);
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, ActivationConfig::clamped_silu_mul(0.0f)); }),
              HasSubstr("limit must be a positive finite number"));
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, ActivationConfig::gpt_oss(1.702f, -1.0f)); }),
              HasSubstr("limit must be a positive finite number"));
  const auto act = ActivationConfig::silu_mul();
  w.w2_bias = HostTensor::zeros(DType::F32, {E, H + 1});
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }), HasSubstr("'w2_bias' has shape [8, 65], expected [8, 64]"));
  w = synthetic_weights(E, H, I, false, 121);
  w.w13_scale.mutable_as<std::uint8_t>()[5] = 0xFF;
  EXPECT_THAT(error_of([&] { reference::moe_forward(w, x.data(), T, tk, act); }), HasSubstr("'w13_scale' holds the E8M0 NaN byte 0xFF at flat index 5"));
}
