// ParallelMoeLayer at world size 1 on one GPU: the tensor- and expert-parallel code path (shard,
// EP id mapping, every token layout) against the CPU oracle of the unsharded layer, and bit for
// bit against a plain MoeLayer. Multi-GPU runs need a multi-GPU machine (docs/parallel.md).
#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "mxmoe/device_buffer.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/parallel.hpp"
#include "mxmoe/presets.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "test_util.hpp"

#ifdef MXMOE_HAVE_NCCL
#include <nccl.h>
#endif

using namespace mxmoe;
using namespace mxmoe::verify;
using mxmoe::test::expect_error;

#ifndef MXMOE_HAVE_NCCL

TEST(ParallelWorld1, NeedsNccl) { GTEST_SKIP() << "GPU test skipped: this build found no NCCL, so ParallelMoeLayer is not compiled"; }

#else

namespace {

constexpr double kTolerance = 1e-2;  // relative Frobenius vs the oracle, as the MoeLayer tests

CanonicalMoeWeights gpt_oss_shaped_weights() {
  const ModelPreset gpt_oss = find_preset("gpt-oss-120b");
  SyntheticSpec spec;  // gpt-oss's H and I, fewer experts
  spec.num_experts = 8;
  spec.hidden = gpt_oss.hidden;
  spec.inter = gpt_oss.inter;
  spec.with_biases = true;
  spec.seed = 606;
  return make_synthetic_weights(spec);
}

}  // namespace

TEST(ParallelWorld1, MatchesOracleAndPlainLayerForEveryKindAndLayout) {
  MXMOE_REQUIRE_HOPPER();
  const CanonicalMoeWeights full = gpt_oss_shaped_weights();
  const int T = 37, k = 4, H = full.hidden;
  const std::vector<std::uint16_t> hidden = random_hidden(T, H, 1, 6.0);
  const TopK topk = random_topk(T, full.num_experts, k, 2, TopKMask::slot_of_every(0, 4));
  const std::size_t out_bytes = static_cast<std::size_t>(T) * H * 2;
  DeviceBuffer d_hidden = DeviceBuffer::from_host(hidden, "d_hidden"), d_out(out_bytes, "d_out"), d_plain(out_bytes, "d_plain");
  DeviceBuffer d_ids = DeviceBuffer::from_host(topk.ids, "d_ids");
  DeviceBuffer d_weights = DeviceBuffer::from_host(topk.weights, "d_weights");

  for (const ActivationConfig& act : {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(10.0f), ActivationConfig::gpt_oss()}) {
    MoeLayerOptions options;
    options.max_tokens = 64;
    options.top_k = k;
    options.activation = act;
    const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), T, topk, act);
    {
      MoeLayer plain(full, options);
      d_plain.fill(0xFF);
      plain.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_weights.as<float>(), d_plain.as(), T, nullptr);
      check_cuda(cudaDeviceSynchronize(), "plain forward");
    }
    const std::vector<std::uint16_t> plain_out = d_plain.to_host<std::uint16_t>();
    for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
      for (TokenLayout in : {TokenLayout::Replicated, TokenLayout::Sequence})
        for (TokenLayout out : {TokenLayout::Replicated, TokenLayout::Sequence}) {
          ParallelOptions p;
          p.shard = {kind, 0, 1};
          p.input = in;
          p.output = out;
          ParallelMoeLayer layer(full, p, options);
          EXPECT_EQ(layer.total_tokens(T), T);
          d_out.fill(0xFF);
          layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_weights.as<float>(), d_out.as(), T, nullptr);
          check_cuda(cudaDeviceSynchronize(), "parallel forward");
          const std::vector<std::uint16_t> got = d_out.to_host<std::uint16_t>();
          const std::string what = std::string(shard_kind_name(kind)) + " in=" + (in == TokenLayout::Sequence ? "seq" : "rep") +
                                   " out=" + (out == TokenLayout::Sequence ? "seq" : "rep") + " " + activation_kind_name(act.kind);
          EXPECT_LT(relative_error(got, want), kTolerance) << what;
          EXPECT_EQ(got, plain_out) << what << ": world 1 must be the plain layer, bit for bit";
        }
  }
}

// Ids >= E are dropped by the EP mapping kernel just as the plain layer drops them.
TEST(ParallelWorld1, ExpertParallelDropsOutOfRangeIds) {
  MXMOE_REQUIRE_HOPPER();
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 256;
  spec.inter = 256;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const int T = 8, k = 2;
  const std::vector<std::uint16_t> hidden = random_hidden(T, 256, 5, 1.0);
  TopK topk = random_topk(T, 4, k, 6, TopKMask::slot_of_every(0, 4));
  std::vector<std::int32_t> ids = topk.ids;
  for (int t = 0; t < T; t += 2) ids[static_cast<std::size_t>(t) * k + 1] = 4 + t;  // out of range
  TopK dropped = topk;
  for (std::size_t i = 0; i < ids.size(); ++i) dropped.ids[i] = ids[i] >= 4 ? -1 : ids[i];
  const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), T, dropped, ActivationConfig::silu_mul());
  DeviceBuffer d_hidden = DeviceBuffer::from_host(hidden, "d_hidden"), d_out(static_cast<std::size_t>(T) * 256 * 2, "d_out");
  DeviceBuffer d_ids = DeviceBuffer::from_host(ids, "d_ids");
  DeviceBuffer d_weights = DeviceBuffer::from_host(topk.weights, "d_weights");
  MoeLayerOptions options;
  options.max_tokens = T;
  options.top_k = k;
  ParallelOptions p;
  p.shard = {ShardKind::Expert, 0, 1};
  ParallelMoeLayer layer(full, p, options);
  d_out.fill(0xFF);
  layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_weights.as<float>(), d_out.as(), T, nullptr);
  check_cuda(cudaDeviceSynchronize(), "forward");
  EXPECT_LT(relative_error(d_out.to_host<std::uint16_t>(), want), kTolerance);
}

TEST(ParallelWorld1, RefusesBadOptionsAndInputs) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 64;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  MoeLayerOptions options;
  options.max_tokens = 4;
  options.top_k = 2;
  ParallelOptions p;
  p.shard = {ShardKind::Tensor, 0, 2};
  expect_error([&] { ParallelMoeLayer layer(full, p, options); }, "world size 2 needs an NCCL communicator, got none");
  p.shard = {ShardKind::Expert, 0, 8};
  expect_error([&] { ParallelMoeLayer layer(full, p, options); }, "world size 8 exceeds the expert count E = 4");
  p.shard = {ShardKind::Tensor, 0, 1};
  options.max_tokens = 0;
  expect_error([&] { ParallelMoeLayer layer(full, p, options); }, "max_tokens and top_k must be at least 1, got 0 and 2");

  MXMOE_REQUIRE_HOPPER();
  options.max_tokens = 4;
  ParallelMoeLayer layer(full, p, options);
  DeviceBuffer d_hidden(5 * 64 * 2, "d_hidden"), d_out(5 * 64 * 2, "d_out");
  DeviceBuffer d_ids(5 * 2 * 4, "d_ids");
  DeviceBuffer d_weights(5 * 2 * 4, "d_weights");
  expect_error([&] { layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_weights.as<float>(), d_out.as(), 5, nullptr); },
               "5 tokens over all ranks exceed max_tokens = 4");
  expect_error([&] { layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_weights.as<float>(), d_out.as(), 0, nullptr); }, "num_tokens must be at least 1, got 0");
  expect_error([&] { layer.forward(nullptr, d_ids.as<std::int32_t>(), d_weights.as<float>(), d_out.as(), 2, nullptr); }, "got a null one");
}

// A real one-rank communicator is accepted at world 1 and checked against the spec otherwise.
TEST(ParallelWorld1, ChecksTheCommunicatorAgainstTheSpec) {
  MXMOE_REQUIRE_HOPPER();
  ncclComm_t comm = nullptr;
  int device = 0;
  const ncclResult_t init = ncclCommInitAll(&comm, 1, &device);
  if (init != ncclSuccess) GTEST_SKIP() << "GPU test skipped: ncclCommInitAll failed: " << ncclGetErrorString(init);
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 64;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  MoeLayerOptions options;
  options.max_tokens = 4;
  options.top_k = 2;
  ParallelOptions p;
  p.comm = comm;
  p.shard = {ShardKind::Expert, 1, 2};
  expect_error([&] { ParallelMoeLayer layer(full, p, options); }, "the communicator has 1 ranks and this is rank 0, but the shard spec says rank 1 of 2");
  p.shard = {ShardKind::Expert, 0, 1};
  EXPECT_NO_THROW(ParallelMoeLayer(full, p, options));
  ncclCommDestroy(comm);
}

#endif  // MXMOE_HAVE_NCCL
