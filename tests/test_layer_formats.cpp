// The weights' format checks, which need no GPU: MXFP4 is group 32 with bf16 activations, NVFP4 group 16
// with bf16 or fp16 activations; anything else is refused saying why.
#include <gtest/gtest.h>

#include "test_util.hpp"
#include "mxmoe/moe_layer.hpp"

using namespace mxmoe;
using test::expect_error;

namespace {

WeightFormat format(DType activations, int group) {
  WeightFormat f;
  f.activation_dtype = activations;
  f.group_size = group;
  return f;
}

TEST(LayerFormats, Bf16WithGroup32IsAcceptedAndIsWhatWeightsCarry) {
  EXPECT_NO_THROW(validate_layer_formats(WeightFormat{}));
  EXPECT_NO_THROW(validate_layer_formats(CanonicalMoeWeights{}.format));
}

TEST(LayerFormats, Fp16ActivationsAreRefusedForMxfp4SayingWhy) {
  expect_error([] { validate_layer_formats(format(DType::F16, 32)); }, ErrorCode::DType, "need bf16 activations, got F16");
  expect_error([] { validate_layer_formats(format(DType::F32, 32)); }, ErrorCode::DType, "must be bf16");
}

TEST(LayerFormats, GroupSixteenIsNvfp4WithBf16OrFp16Activations) {
  EXPECT_NO_THROW(validate_layer_formats(format(DType::BF16, 16)));
  EXPECT_NO_THROW(validate_layer_formats(format(DType::F16, 16)));
  EXPECT_NO_THROW(validate_layer_formats(WeightFormat::nvfp4_with(DType::F16)));
  EXPECT_TRUE(WeightFormat::nvfp4_with(DType::BF16).nvfp4());
  EXPECT_FALSE(WeightFormat::mxfp4().nvfp4());
  expect_error([] { validate_layer_formats(format(DType::F32, 16)); }, ErrorCode::DType,
               "activations must be bf16 or fp16 for NVFP4 weights, got F32");
  expect_error([] { validate_layer_formats(format(DType::I8, 16)); }, ErrorCode::DType, "got I8");
}

TEST(LayerFormats, OtherGroupSizesAreRefused) {
  for (int g : {0, 8, 64, -32})
    expect_error([g] { validate_layer_formats(format(DType::BF16, g)); }, ErrorCode::InvalidArgument,
                 "group size must be 16 (NVFP4, E4M3 scales) or 32 (MXFP4, E8M0 scales), got " + std::to_string(g));
}

// The constructor runs these checks before it looks for a GPU, so they hold on any machine.
TEST(LayerFormats, TheLayerConstructorChecksThemFirst) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 32;
  CanonicalMoeWeights w = make_synthetic_weights(spec);
  MoeLayerOptions o;
  o.max_tokens = 4;
  o.top_k = 2;
  w.format = format(DType::F16, 32);
  expect_error([&] { MoeLayer layer(w, o); }, ErrorCode::DType, "need bf16 activations");
  w.format = format(DType::BF16, 64);
  expect_error([&] { MoeLayer layer(w, o); }, ErrorCode::InvalidArgument, "group size must be 16");
}

}  // namespace
