// The layer's format checks, which need no GPU: bf16 activations for MXFP4, group 32 (16 is NVFP4).
#include <gtest/gtest.h>

#include "expect_error.hpp"
#include "mxmoe/moe_layer.hpp"

using namespace mxmoe;
using test::expect_error;

namespace {

MoeLayerOptions options_with(DType activations, int group) {
  MoeLayerOptions o;
  o.max_tokens = 4;
  o.top_k = 2;
  o.activation_dtype = activations;
  o.group_size = group;
  return o;
}

TEST(LayerFormats, Bf16WithGroup32IsAccepted) { EXPECT_NO_THROW(validate_layer_formats(MoeLayerOptions{})); }

TEST(LayerFormats, Fp16ActivationsAreRefusedSayingWhy) {
  expect_error([] { validate_layer_formats(options_with(DType::F16, 32)); }, ErrorCode::DType, "need bf16 activations, got F16");
  expect_error([] { validate_layer_formats(options_with(DType::F32, 32)); }, ErrorCode::DType, "must be bf16");
}

TEST(LayerFormats, GroupSixteenIsNvfp4NotSupportedYet) {
  expect_error([] { validate_layer_formats(options_with(DType::BF16, 16)); }, ErrorCode::Unsupported, "NVFP4");
  expect_error([] { validate_layer_formats(options_with(DType::BF16, 64)); }, ErrorCode::InvalidArgument,
               "group size must be 16 (NVFP4, E4M3 scales) or 32 (MXFP4, E8M0 scales), got 64");
}

// The constructor runs these checks before it looks for a GPU, so they hold on any machine.
TEST(LayerFormats, TheLayerConstructorChecksThemFirst) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 32;
  const CanonicalMoeWeights w = make_synthetic_weights(spec);
  expect_error([&] { MoeLayer layer(w, options_with(DType::F16, 32)); }, ErrorCode::DType, "need bf16 activations");
  expect_error([&] { MoeLayer layer(w, options_with(DType::BF16, 16)); }, ErrorCode::Unsupported, "NVFP4");
}

}  // namespace
