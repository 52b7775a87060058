// CanonicalMoeWeights for NVFP4 (group 16, UE4M3 block scales, fp32 global scales per matrix):
// validate's named refusals, expert_weight_bytes, synthetic weights; and MXFP4's full E8M0 range.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "formats/nvfp4.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/weights.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using ::testing::HasSubstr;

namespace {

SyntheticSpec nv_spec(std::uint64_t seed, DType act = DType::BF16) {
  SyntheticSpec s;
  s.num_experts = 3;
  s.hidden = 48;  // a multiple of 16, not of 32
  s.inter = 80;
  s.with_biases = true;
  s.seed = seed;
  s.format = WeightFormat::nvfp4_with(act);
  return s;
}

std::string validate_error(const CanonicalMoeWeights& w) {
  return mxmoe::test::error_message([&] { w.validate(); });
}

std::uint64_t fresh_seed() { return std::random_device{}(); }

}  // namespace

TEST(Nvfp4Weights, SyntheticWeightsHaveTheContractsShapesAndValidate) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (DType act : {DType::BF16, DType::F16}) {
    const CanonicalMoeWeights w = make_synthetic_weights(nv_spec(seed, act));
    EXPECT_NO_THROW(w.validate());
    EXPECT_TRUE(w.format.nvfp4());
    EXPECT_EQ(w.format.activation_dtype, act);
    EXPECT_EQ(w.w13.shape(), (Shape{3, 160, 24}));
    EXPECT_EQ(w.w13_scale.shape(), (Shape{3, 160, 3}));
    EXPECT_EQ(w.w2.shape(), (Shape{3, 48, 40}));
    EXPECT_EQ(w.w2_scale.shape(), (Shape{3, 48, 5}));
    ASSERT_TRUE(w.w13_global_scale && w.w2_global_scale);
    EXPECT_EQ(w.w13_global_scale->shape(), (Shape{3, 2}));
    EXPECT_EQ(w.w2_global_scale->shape(), (Shape{3}));
    for (const HostTensor* g : {&*w.w13_global_scale, &*w.w2_global_scale})
      for (std::int64_t i = 0; i < g->numel(); ++i) {
        EXPECT_GE(g->as<float>()[i], 0.5f);
        EXPECT_LE(g->as<float>()[i], 2.0f);
      }
    // Gate and up of one expert have their own global scales.
    EXPECT_NE(w.w13_global_scale->as<float>()[0], w.w13_global_scale->as<float>()[1]);
    EXPECT_EQ(w.expert_weight_bytes(), 3u * 48 * 80 / 2 + 3u * 48 * 80 / 16 + 12u);
  }
}

TEST(Nvfp4Weights, SyntheticValuesSpreadLikeTheAskedStd) {
  for (float std : {0.02f, 0.3f}) {
    SyntheticSpec s = nv_spec(fresh_seed());
    s.weight_std = std;
    const CanonicalMoeWeights w = make_synthetic_weights(s);
    const auto* p = w.w2.as<std::uint8_t>();
    const auto* sc = w.w2_scale.as<std::uint8_t>();
    double sum2 = 0;
    const std::int64_t n = w.w2.numel() * 2, per_expert = 48 * 80;
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint8_t code = i % 2 ? p[i / 2] >> 4 : p[i / 2] & 15u;
      const double v = formats::nvfp4_dequantize(code, sc[i / 16]) * w.w2_global_scale->as<float>()[i / per_expert];
      sum2 += v * v;
    }
    const double rms = std::sqrt(sum2 / static_cast<double>(n));
    EXPECT_GT(rms, std / 2.5) << "std " << std;
    EXPECT_LT(rms, std * 2.5) << "std " << std;
  }
}

TEST(Nvfp4Weights, ValidateNamesBadScaleBytes) {
  const CanonicalMoeWeights good = make_synthetic_weights(nv_spec(fresh_seed()));
  CanonicalMoeWeights w = good;
  w.w2_scale.mutable_as<std::uint8_t>()[123] = 0x7F;
  EXPECT_THAT(validate_error(w), HasSubstr("tensor 'w2_scale' holds the UE4M3 NaN byte 0x7F at flat index 123"));
  w = make_synthetic_weights(nv_spec(1));
  w.w13_scale.mutable_as<std::uint8_t>()[7] = 0xB8;  // -1.0 in E4M3
  EXPECT_THAT(validate_error(w), HasSubstr("tensor 'w13_scale' holds byte 184 at flat index 7, whose sign bit is set: NVFP4 block scales are unsigned (UE4M3)"));
  w = make_synthetic_weights(nv_spec(1));
  w.w13_scale.mutable_as<std::uint8_t>()[8] = 0xFF;
  EXPECT_THAT(validate_error(w), HasSubstr("holds byte 255 at flat index 8, whose sign bit is set"));
  w = make_synthetic_weights(nv_spec(1));
  w.w13_scale.mutable_as<std::uint8_t>()[9] = 0x00;  // zero and the largest (448) are valid scales
  w.w13_scale.mutable_as<std::uint8_t>()[10] = 0x7E;
  EXPECT_NO_THROW(w.validate());
}

TEST(Nvfp4Weights, ValidateNeedsFinitePositiveGlobalScales) {
  const CanonicalMoeWeights good = make_synthetic_weights(nv_spec(fresh_seed()));
  CanonicalMoeWeights w = good;
  w.w13_global_scale.reset();
  EXPECT_THAT(validate_error(w), HasSubstr("NVFP4 weights (group 16) need tensor 'w13_global_scale' (F32 [3, 2])"));
  w = good;
  w.w2_global_scale.reset();
  EXPECT_THAT(validate_error(w), HasSubstr("need tensor 'w2_global_scale' (F32 [3])"));
  w = good;
  w.w13_global_scale = HostTensor::zeros(DType::F32, {3});
  EXPECT_THAT(validate_error(w), HasSubstr("'w13_global_scale' has shape [3], expected [3, 2]"));
  w = good;
  w.w2_global_scale = HostTensor::zeros(DType::BF16, {3});
  EXPECT_THAT(validate_error(w), HasSubstr("'w2_global_scale' has dtype BF16, expected F32"));
  for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
    w = make_synthetic_weights(nv_spec(2));
    w.w13_global_scale->mutable_as<float>()[5] = bad;
    EXPECT_THAT(validate_error(w), HasSubstr("tensor 'w13_global_scale' at flat index 5 is")) << bad;
    EXPECT_THAT(validate_error(w), HasSubstr("a global scale must be finite and positive")) << bad;
  }
}

TEST(Nvfp4Weights, ShapesUseTheGroupOf16) {
  const CanonicalMoeWeights good = make_synthetic_weights(nv_spec(fresh_seed()));
  CanonicalMoeWeights w = good;
  w.w2_scale = HostTensor::zeros(DType::U8, {3, 48, 2});  // an MXFP4-sized scale
  EXPECT_THAT(validate_error(w), HasSubstr("'w2_scale' has shape [3, 48, 2], expected [3, 48, 5]"));
  w = good;
  w.hidden = 40;
  EXPECT_THAT(validate_error(w), HasSubstr("H and I must be multiples of the NVFP4 group (16), got H=40 I=80"));
  // The same weights read as MXFP4 are refused: 48 is no multiple of 32.
  w = good;
  w.format = WeightFormat::mxfp4();
  EXPECT_THAT(validate_error(w), HasSubstr("multiples of the MXFP4 group (32), got H=48"));
  w.format = WeightFormat{16, DType::F32};
  EXPECT_THAT(validate_error(w), HasSubstr("activations must be bf16 or fp16 for NVFP4 weights, got F32"));
}

TEST(Nvfp4Weights, Mxfp4CarriesNoGlobalScales) {
  CanonicalMoeWeights w = mxmoe::test::synthetic_weights(2, 64, 32, false, fresh_seed());
  EXPECT_NO_THROW(w.validate());
  EXPECT_FALSE(w.w13_global_scale || w.w2_global_scale);
  w.w2_global_scale = HostTensor::zeros(DType::F32, {2});
  EXPECT_THAT(validate_error(w), HasSubstr("MXFP4 weights (group 32, E8M0 scales) carry no global scales, but 'w2_global_scale' is set"));
}

// Every E8M0 byte 0..254 is a scale; a block where byte x code reaches 2^128 is refused, named.
TEST(Nvfp4Weights, Mxfp4ValidateRefusesOnlyBlocksThatOverflow) {
  CanonicalMoeWeights w = mxmoe::test::synthetic_weights(2, 64, 32, false, fresh_seed());
  // Expert 1, w2 row 5, group 0: all codes 3 (1.5) under byte 254 -> 1.5 x 2^127, finite.
  auto* w2 = w.w2.mutable_as<std::uint8_t>();
  const std::int64_t row = 1 * 64 + 5;
  for (int i = 0; i < 16; ++i) w2[row * 16 + i] = 0x33;
  w.w2_scale.mutable_as<std::uint8_t>()[row] = 254;
  EXPECT_NO_THROW(w.validate());
  w2[row * 16 + 4] = 0x34;  // element 9 becomes code 3 | ... high nibble 3, low nibble 4 (element 8: 2.0)
  EXPECT_THAT(validate_error(w), HasSubstr("tensor 'w2_scale' at flat index 69 (expert 1, row 5, group 0): E8M0 byte 254 (2^127) "
                                           "times E2M1 code 4 (2) is infinite in float32"));
  w2[row * 16 + 4] = 0x33;
  w.w2_scale.mutable_as<std::uint8_t>()[row] = 253;
  w2[row * 16 + 15] = 0xE3;  // element 31: code 14 (-4) under 2^126
  EXPECT_THAT(validate_error(w), HasSubstr("E8M0 byte 253 (2^126) times E2M1 code 14 (-4) is infinite in float32"));
  w2[row * 16 + 15] = 0xD3;  // -3 x 2^126 is finite
  EXPECT_NO_THROW(w.validate());
}
