// RoutingConfig / ActivationConfig validation and factories, and the model presets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "mxmoe/config.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/presets.hpp"

using namespace mxmoe;
using ::testing::HasSubstr;

namespace {

std::string routing_error(const RoutingConfig& c, int E) {
  try {
    c.validate(E);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    return e.what();
  }
  return "no error";
}

std::string activation_error(const ActivationConfig& a) {
  try {
    a.validate();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(RoutingConfig, FactoriesSetTheirFields) {
  const RoutingConfig v3 = RoutingConfig::deepseek_v3(8, 8, 4, 2.5f);
  EXPECT_EQ(v3.mode, RoutingMode::SigmoidGrouped);
  EXPECT_EQ(v3.top_k, 8);
  EXPECT_EQ(v3.n_groups, 8);
  EXPECT_EQ(v3.topk_groups, 4);
  EXPECT_TRUE(v3.renormalize);
  EXPECT_FLOAT_EQ(v3.routed_scaling, 2.5f);
  const RoutingConfig v4 = RoutingConfig::deepseek_v4(6, 1.5f);
  EXPECT_EQ(v4.mode, RoutingMode::SqrtSoftplus);
  EXPECT_EQ(v4.n_groups, 1);
  EXPECT_FLOAT_EQ(v4.routed_scaling, 1.5f);
  EXPECT_EQ(RoutingConfig::gpt_oss(4).mode, RoutingMode::SoftmaxTopK);
  EXPECT_FALSE(RoutingConfig::softmax(2, false).renormalize);
}

TEST(RoutingConfig, ValidConfigsPass) {
  EXPECT_EQ(routing_error(RoutingConfig::softmax(1, true), 1), "no error");
  EXPECT_EQ(routing_error(RoutingConfig::softmax(8, true), 8), "no error");
  EXPECT_EQ(routing_error(RoutingConfig::deepseek_v3(8, 8, 4, 2.5f), 256), "no error");
  EXPECT_EQ(routing_error(RoutingConfig::deepseek_v3(8, 4, 1, 2.5f), 32), "no error");  // 8 experts in the one group
}

TEST(RoutingConfig, EachBadFieldIsNamed) {
  EXPECT_THAT(routing_error(RoutingConfig::softmax(0, true), 8), HasSubstr("top_k must be in 1..8, got 0"));
  EXPECT_THAT(routing_error(RoutingConfig::softmax(9, true), 8), HasSubstr("top_k must be in 1..8, got 9"));
  EXPECT_THAT(routing_error(RoutingConfig::softmax(1, true), 0), HasSubstr("expert count must be positive, got 0"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v3(2, 3, 1, 1.0f), 8), HasSubstr("n_groups = 3 must divide the expert count 8"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v3(2, 0, 1, 1.0f), 8), HasSubstr("n_groups = 0"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v3(2, 4, 0, 1.0f), 8), HasSubstr("topk_groups = 0 must be in 1..n_groups (4)"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v3(2, 4, 5, 1.0f), 8), HasSubstr("topk_groups = 5 must be in 1..n_groups (4)"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v3(5, 4, 2, 1.0f), 8), HasSubstr("top_k = 5 exceeds the experts in the 2 selected groups"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v4(2, -1.0f), 8), HasSubstr("routed_scaling must be a positive finite number"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v4(2, NAN), 8), HasSubstr("routed_scaling"));
  EXPECT_THAT(routing_error(RoutingConfig::deepseek_v4(2, INFINITY), 8), HasSubstr("routed_scaling"));
}

TEST(ActivationConfig, LimitsAndAlpha) {
  EXPECT_EQ(activation_error(ActivationConfig::silu_mul()), "no error");  // no limit needed
  EXPECT_EQ(activation_error(ActivationConfig::clamped_silu_mul(10.0f)), "no error");
  EXPECT_EQ(activation_error(ActivationConfig::gpt_oss()), "no error");
  EXPECT_THAT(activation_error(ActivationConfig::clamped_silu_mul(0.0f)), HasSubstr("clamped-silu: limit must be a positive finite number"));
  EXPECT_THAT(activation_error(ActivationConfig::clamped_silu_mul(-3.0f)), HasSubstr("limit must be a positive finite number"));
  EXPECT_THAT(activation_error(ActivationConfig::clamped_silu_mul(NAN)), HasSubstr("limit must be a positive finite number"));
  EXPECT_THAT(activation_error(ActivationConfig::gpt_oss(1.702f, 0.0f)), HasSubstr("gpt-oss: limit must be a positive finite number"));
  EXPECT_THAT(activation_error(ActivationConfig::gpt_oss(0.0f, 7.0f)), HasSubstr("alpha must be positive and finite"));
  const ActivationConfig g = ActivationConfig::gpt_oss();
  EXPECT_FLOAT_EQ(g.alpha, 1.702f);
  EXPECT_FLOAT_EQ(g.limit, 7.0f);
}

TEST(Presets, EveryPresetIsConsistent) {
  ASSERT_FALSE(model_presets().empty());
  for (const ModelPreset& p : model_presets()) {
    EXPECT_EQ(p.hidden % 32, 0) << p.name;
    EXPECT_EQ(p.inter % 32, 0) << p.name;
    EXPECT_EQ(p.routing.top_k, p.top_k) << p.name;
    EXPECT_NO_THROW(p.routing.validate(p.num_experts)) << p.name;
    EXPECT_NO_THROW(p.activation.validate()) << p.name;
    EXPECT_EQ(&find_preset(p.name), &p);
  }
  const ModelPreset flash = find_preset("dsv4-flash");
  EXPECT_EQ(flash.hidden, 4096);
  EXPECT_EQ(flash.inter, 2048);
  EXPECT_EQ(flash.num_experts, 256);
  EXPECT_EQ(flash.top_k, 6);
  EXPECT_EQ(flash.routing.mode, RoutingMode::SqrtSoftplus);
  EXPECT_FLOAT_EQ(flash.routing.routed_scaling, 1.5f);
  EXPECT_EQ(flash.activation.kind, ActivationKind::ClampedSiluMul);
  EXPECT_FLOAT_EQ(flash.activation.limit, 10.0f);
}

TEST(Presets, UnknownNameListsTheKnownOnes) {
  try {
    find_preset("dsv5");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown model preset 'dsv5'"));
    for (const ModelPreset& p : model_presets()) EXPECT_THAT(e.what(), HasSubstr(p.name));
  }
}

// Each choice has one name, and the parse of that name gives the choice back.
TEST(Names, ActivationAndGemmTileNamesRoundTrip) {
  for (ActivationKind k : {ActivationKind::SiluMul, ActivationKind::ClampedSiluMul, ActivationKind::GptOssSwiglu})
    EXPECT_EQ(parse_activation_kind(activation_kind_name(k)), k) << activation_kind_name(k);
  for (GemmTile t : {GemmTile::Auto, GemmTile::Tiny, GemmTile::Decode, GemmTile::Small, GemmTile::Medium, GemmTile::Prefill, GemmTile::Wgmma, GemmTile::WgmmaNarrow, GemmTile::WgmmaSmall})
    EXPECT_EQ(parse_gemm_tile(gemm_tile_name(t)), t) << gemm_tile_name(t);
  EXPECT_STREQ(activation_kind_name(ActivationKind::ClampedSiluMul), "clamped-silu");
  try {
    parse_activation_kind("clamped");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown activation 'clamped' (known: silu, clamped-silu, gpt-oss)"));
  }
  try {
    parse_gemm_tile("16");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown GEMM tile '16' (known: auto, tiny, decode, small, medium, prefill, wgmma, wgmma-narrow, wgmma-small)"));
  }
}
