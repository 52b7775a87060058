// MoeLayer's checks that run before it touches a GPU: they hold on any machine with the CUDA build.
#include <gtest/gtest.h>

#include "test_util.hpp"
#include "mxmoe/moe_layer.hpp"

using namespace mxmoe;
using test::expect_error;

namespace {

CanonicalMoeWeights small_weights(int experts = 4) {
  SyntheticSpec spec;
  spec.num_experts = experts;
  spec.hidden = 64;
  spec.inter = 32;
  return make_synthetic_weights(spec);
}

MoeLayerOptions options(int max_tokens, int top_k, ActivationConfig act = ActivationConfig::silu_mul()) {
  MoeLayerOptions o;
  o.max_tokens = max_tokens;
  o.top_k = top_k;
  o.activation = act;
  return o;
}

TEST(LayerOptions, BadOptionsAreNamedBeforeAnyGpuWork) {
  if (!cuda_backend_compiled()) GTEST_SKIP() << "this build has no CUDA backend; its layer refuses every option alike";
  const CanonicalMoeWeights w = small_weights();
  expect_error([&] { MoeLayer l(w, options(0, 2)); }, ErrorCode::InvalidArgument, "max_tokens must be in 1..4194304, got 0");
  expect_error([&] { MoeLayer l(w, options(5000000, 2)); }, ErrorCode::InvalidArgument, "max_tokens must be in 1..4194304");
  expect_error([&] { MoeLayer l(w, options(8, 0)); }, ErrorCode::InvalidArgument, "top_k must be in 1..4, got 0");
  expect_error([&] { MoeLayer l(w, options(8, 5)); }, ErrorCode::InvalidArgument, "top_k must be in 1..4, got 5");
  expect_error([&] { MoeLayer l(w, options(8, 2, ActivationConfig::gpt_oss(1.702f, 0.0f))); }, ErrorCode::InvalidArgument,
               "limit must be a positive finite number");
  CanonicalMoeWeights bad = small_weights();
  bad.w2_scale = HostTensor::zeros(DType::U8, {4, 64, 2});
  expect_error([&] { MoeLayer l(bad, options(8, 2)); }, ErrorCode::Shape, "'w2_scale' has shape [4, 64, 2], expected [4, 64, 1]");
}

TEST(LayerOptions, TooManyExpertsForTheAlignmentKernel) {
  if (!cuda_backend_compiled()) GTEST_SKIP() << "this build has no CUDA backend";
  const CanonicalMoeWeights w = small_weights(4097);
  expect_error([&] { MoeLayer l(w, options(8, 2)); }, ErrorCode::Unsupported, "at most 4096 experts, got 4097");
}

TEST(LayerOptions, WithoutAHopperGpuTheLayerSaysWhatItFound) {
  const DeviceCheck device = check_hopper_device(0);
  if (device.ok) GTEST_SKIP() << "a Hopper GPU is present: " << device.message;
  const CanonicalMoeWeights w = small_weights();
  expect_error([&] { MoeLayer l(w, options(8, 2)); }, ErrorCode::Unsupported, device.message);
}

}  // namespace
