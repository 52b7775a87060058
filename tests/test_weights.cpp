// CanonicalMoeWeights::validate (every shape, dtype, missing tensor and the 0xFF scale) and
// make_synthetic_weights (determinism, shapes, the value spread it promises).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "mxmoe/error.hpp"
#include "mxmoe/weights.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using ::testing::HasSubstr;

namespace {

SyntheticSpec small_spec(std::uint64_t seed, bool biases = true) {
  SyntheticSpec s;
  s.num_experts = 4;
  s.hidden = 64;
  s.inter = 96;
  s.with_biases = biases;
  s.seed = seed;
  return s;
}

std::string validate_error(const CanonicalMoeWeights& w) {
  return mxmoe::test::error_message([&] { w.validate(); });
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

}  // namespace

TEST(WeightsValidate, AcceptsSyntheticWeights) {
  EXPECT_NO_THROW(make_synthetic_weights(small_spec(1)).validate());
  EXPECT_NO_THROW(make_synthetic_weights(small_spec(1, false)).validate());
}

TEST(WeightsValidate, NamesTheTensorWithTheWrongShape) {
  const CanonicalMoeWeights good = make_synthetic_weights(small_spec(2));
  struct Case {
    std::function<void(CanonicalMoeWeights&)> spoil;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](CanonicalMoeWeights& w) { w.w13 = HostTensor::zeros(DType::U8, {4, 192, 33}); }, "'w13' has shape [4, 192, 33], expected [4, 192, 32]"},
      {[](CanonicalMoeWeights& w) { w.w13_scale = HostTensor::zeros(DType::U8, {4, 96, 2}); }, "'w13_scale' has shape [4, 96, 2], expected [4, 192, 2]"},
      {[](CanonicalMoeWeights& w) { w.w2 = HostTensor::zeros(DType::U8, {3, 64, 48}); }, "'w2' has shape [3, 64, 48], expected [4, 64, 48]"},
      {[](CanonicalMoeWeights& w) { w.w2_scale = HostTensor::zeros(DType::U8, {4, 64}); }, "'w2_scale' has shape [4, 64], expected [4, 64, 3]"},
      {[](CanonicalMoeWeights& w) { w.w13_bias = HostTensor::zeros(DType::F32, {4, 96}); }, "'w13_bias' has shape [4, 96], expected [4, 192]"},
      {[](CanonicalMoeWeights& w) { w.w2_bias = HostTensor::zeros(DType::F32, {4, 65}); }, "'w2_bias' has shape [4, 65], expected [4, 64]"},
      {[](CanonicalMoeWeights& w) { w.router_weight = HostTensor::zeros(DType::F32, {64, 4}); }, "'router_weight' has shape [64, 4], expected [4, 64]"},
      {[](CanonicalMoeWeights& w) { w.correction_bias = HostTensor::zeros(DType::F32, {5}); }, "'correction_bias' has shape [5], expected [4]"},
  };
  for (const Case& c : cases) {
    CanonicalMoeWeights w = good;
    c.spoil(w);
    EXPECT_THAT(validate_error(w), HasSubstr(c.expected));
  }
}

TEST(WeightsValidate, NamesTheTensorWithTheWrongDtype) {
  const CanonicalMoeWeights good = make_synthetic_weights(small_spec(3));
  CanonicalMoeWeights w = good;
  w.w2 = HostTensor::zeros(DType::I32, {4, 64, 48});
  EXPECT_THAT(validate_error(w), HasSubstr("'w2' has dtype I32, expected U8"));
  w = good;
  w.w13_scale = HostTensor::zeros(DType::F32, {4, 192, 2});
  EXPECT_THAT(validate_error(w), HasSubstr("'w13_scale' has dtype F32, expected U8"));
  w = good;
  w.w13_bias = HostTensor::zeros(DType::BF16, {4, 192});
  EXPECT_THAT(validate_error(w), HasSubstr("'w13_bias' has dtype BF16, expected F32"));
}

TEST(WeightsValidate, RefusesMissingTensorsAndBadSizes) {
  const CanonicalMoeWeights good = make_synthetic_weights(small_spec(4));
  CanonicalMoeWeights w = good;
  w.w2_scale = HostTensor();
  EXPECT_THAT(validate_error(w), HasSubstr("tensor 'w2_scale' is missing (expected U8 [4, 64, 3])"));
  w = good;
  w.hidden = 48;
  EXPECT_THAT(validate_error(w), HasSubstr("H and I must be multiples of the MXFP4 group (32), got H=48 I=96"));
  w = good;
  w.num_experts = 0;
  EXPECT_THAT(validate_error(w), HasSubstr("E, H, I must be positive, got E=0"));
}

TEST(WeightsValidate, RefusesTheE8m0NanScale) {
  CanonicalMoeWeights w = make_synthetic_weights(small_spec(5));
  w.w2_scale.mutable_as<std::uint8_t>()[700] = 0xFF;
  EXPECT_THAT(validate_error(w), HasSubstr("'w2_scale' holds the E8M0 NaN byte 0xFF at flat index 700"));
  w = make_synthetic_weights(small_spec(5));
  w.w13_scale.mutable_as<std::uint8_t>()[0] = 0xFF;
  EXPECT_THAT(validate_error(w), HasSubstr("'w13_scale' holds the E8M0 NaN byte 0xFF at flat index 0"));
}

TEST(SyntheticWeights, ShapesAndDtypes) {
  const SyntheticSpec s = small_spec(6);
  const CanonicalMoeWeights w = make_synthetic_weights(s);
  EXPECT_EQ(w.num_experts, 4);
  EXPECT_EQ(w.hidden, 64);
  EXPECT_EQ(w.inter, 96);
  EXPECT_EQ(w.w13.shape(), (Shape{4, 192, 32}));
  EXPECT_EQ(w.w13_scale.shape(), (Shape{4, 192, 2}));
  EXPECT_EQ(w.w2.shape(), (Shape{4, 64, 48}));
  EXPECT_EQ(w.w2_scale.shape(), (Shape{4, 64, 3}));
  ASSERT_TRUE(w.w13_bias && w.w2_bias && w.router_weight && w.correction_bias);
  EXPECT_EQ(w.w13_bias->shape(), (Shape{4, 192}));
  EXPECT_EQ(w.w2_bias->shape(), (Shape{4, 64}));
  EXPECT_EQ(w.router_weight->shape(), (Shape{4, 64}));
  EXPECT_EQ(w.correction_bias->shape(), (Shape{4}));
  EXPECT_EQ(w.expert_weight_bytes(), 3u * 64 * 96 / 2 + 3u * 64 * 96 / 32);
  SyntheticSpec bare = s;
  bare.with_biases = false;
  bare.with_router = false;
  const CanonicalMoeWeights b = make_synthetic_weights(bare);
  EXPECT_FALSE(b.w13_bias || b.w2_bias || b.router_weight || b.correction_bias);
}

TEST(SyntheticWeights, SameSeedSameBytesOtherSeedOtherBytes) {
  const CanonicalMoeWeights a = make_synthetic_weights(small_spec(7)), b = make_synthetic_weights(small_spec(7));
  const CanonicalMoeWeights c = make_synthetic_weights(small_spec(8));
  for (auto member : {&CanonicalMoeWeights::w13, &CanonicalMoeWeights::w13_scale, &CanonicalMoeWeights::w2, &CanonicalMoeWeights::w2_scale}) {
    EXPECT_TRUE(same_bytes(a.*member, b.*member));
    EXPECT_FALSE(same_bytes(a.*member, c.*member));
  }
  for (auto member : {&CanonicalMoeWeights::w13_bias, &CanonicalMoeWeights::w2_bias, &CanonicalMoeWeights::router_weight,
                      &CanonicalMoeWeights::correction_bias}) {
    EXPECT_TRUE(same_bytes(*(a.*member), *(b.*member)));
    EXPECT_FALSE(same_bytes(*(a.*member), *(c.*member)));
  }
  // Experts are distinct from each other too.
  const auto* w13 = a.w13.as<std::uint8_t>();
  EXPECT_NE(std::memcmp(w13, w13 + 192 * 32, 192 * 32), 0);
}

TEST(SyntheticWeights, ValuesSpreadLikeTheAskedStd) {
  // Uniform E2M1 codes have rms sqrt(mean of squares of 0,.5,1,1.5,2,3,4,6) ~ 2.93; the scales sit
  // at 2^round(log2(std/2.93)) +-1 octave, so the rms lands within a factor ~2.5 of the asked std.
  for (float std : {0.02f, 0.25f}) {
    SyntheticSpec s = small_spec(9);
    s.weight_std = std;
    const CanonicalMoeWeights w = make_synthetic_weights(s);
    const auto* p = w.w2.as<std::uint8_t>();
    const auto* sc = w.w2_scale.as<std::uint8_t>();
    const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    double sum2 = 0;
    const std::int64_t n = w.w2.numel() * 2;
    for (std::int64_t i = 0; i < n; ++i) {
      const unsigned nib = i % 2 ? p[i / 2] >> 4 : p[i / 2] & 15u;
      const double v = mags[nib & 7u] * std::ldexp(1.0, sc[i / 32] - 127);
      sum2 += v * v;
    }
    const double rms = std::sqrt(sum2 / static_cast<double>(n));
    EXPECT_GT(rms, std / 2.5) << "std " << std;
    EXPECT_LT(rms, std * 2.5) << "std " << std;
  }
}

TEST(SyntheticWeights, RejectsBadSpecs) {
  SyntheticSpec s = small_spec(10);
  s.hidden = 100;
  try {
    make_synthetic_weights(s);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("H, I multiples of 32; got E=4 H=100 I=96"));
  }
  s = small_spec(10);
  s.weight_std = 0.0f;
  EXPECT_THROW(make_synthetic_weights(s), Error);
  s = small_spec(10);
  s.num_experts = -1;
  EXPECT_THROW(make_synthetic_weights(s), Error);
}
