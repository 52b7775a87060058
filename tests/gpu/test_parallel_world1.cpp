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

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "../parallel_test_inputs.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/parallel.hpp"
#include "mxmoe/reference.hpp"

#ifdef MXMOE_HAVE_NCCL
#include <nccl.h>
#endif

using namespace mxmoe;
using ::testing::HasSubstr;

#ifndef MXMOE_HAVE_NCCL

TEST(ParallelWorld1, NeedsNccl) { GTEST_SKIP() << "GPU test skipped: this build found no NCCL, so ParallelMoeLayer is not compiled"; }

#else

namespace {

constexpr double kTolerance = 1e-2;  // relative Frobenius vs the oracle, as the MoeLayer tests

#define REQUIRE_HOPPER()                                                  \
  do {                                                                    \
    const DeviceCheck check = check_hopper_device(0);                     \
    if (!check.ok) GTEST_SKIP() << "GPU test skipped: " << check.message; \
  } while (0)

void cuda_ok(cudaError_t err, const char* what) { ASSERT_EQ(err, cudaSuccess) << what << ": " << cudaGetErrorString(err); }

template <class T>
class DeviceVector {
 public:
  explicit DeviceVector(std::size_t n) : n_(n) {
    if (cudaMalloc(&ptr_, n * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc failed in the test");
  }
  explicit DeviceVector(const std::vector<T>& host) : DeviceVector(host.size()) {
    cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceVector() { cudaFree(ptr_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  T* get() const { return ptr_; }
  void poison() { cudaMemset(ptr_, 0xFF, n_ * sizeof(T)); }  // bf16/fp32 NaN: unwritten elements fail
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

double relative_frobenius(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& want) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = formats::bf16_to_float(got[i]), w = formats::bf16_to_float(want[i]);
    if (!std::isfinite(g)) return INFINITY;
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  return std::sqrt(diff / norm);
}

using test::random_hidden;

// Distinct experts per token, positive weights; slot 0 of every fourth token is -1.
TopK random_topk(int tokens, int top_k, int num_experts, std::uint64_t seed) {
  return test::random_topk(tokens, top_k, num_experts, seed, test::SlotMask{0, 4, 0});
}

CanonicalMoeWeights gpt_oss_shaped_weights() {
  SyntheticSpec spec;
  spec.num_experts = 8;
  spec.hidden = 2880;
  spec.inter = 2880;
  spec.with_biases = true;
  spec.seed = 606;
  return make_synthetic_weights(spec);
}

void expect_error(const std::function<void()>& f, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << text << "'";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(text));
  }
}

}  // namespace

TEST(ParallelWorld1, MatchesOracleAndPlainLayerForEveryKindAndLayout) {
  REQUIRE_HOPPER();
  const CanonicalMoeWeights full = gpt_oss_shaped_weights();
  const int T = 37, k = 4, H = full.hidden;
  const std::vector<std::uint16_t> hidden = random_hidden(T, H, 6.0, 1);
  const TopK topk = random_topk(T, k, full.num_experts, 2);
  DeviceVector<std::uint16_t> d_hidden(hidden), d_out(static_cast<std::size_t>(T) * H), d_plain(static_cast<std::size_t>(T) * H);
  DeviceVector<std::int32_t> d_ids(topk.ids);
  DeviceVector<float> d_weights(topk.weights);

  for (const ActivationConfig& act : {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(10.0f), ActivationConfig::gpt_oss()}) {
    MoeLayerOptions options;
    options.max_tokens = 64;
    options.top_k = k;
    options.activation = act;
    const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), T, topk, act);
    {
      MoeLayer plain(full, options);
      d_plain.poison();
      plain.forward(d_hidden.get(), d_ids.get(), d_weights.get(), d_plain.get(), T, nullptr);
      cuda_ok(cudaDeviceSynchronize(), "plain forward");
    }
    const std::vector<std::uint16_t> plain_out = d_plain.download();
    for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
      for (TokenLayout in : {TokenLayout::Replicated, TokenLayout::Sequence})
        for (TokenLayout out : {TokenLayout::Replicated, TokenLayout::Sequence}) {
          ParallelOptions p;
          p.shard = {kind, 0, 1};
          p.input = in;
          p.output = out;
          ParallelMoeLayer layer(full, p, options);
          EXPECT_EQ(layer.total_tokens(T), T);
          d_out.poison();
          layer.forward(d_hidden.get(), d_ids.get(), d_weights.get(), d_out.get(), T, nullptr);
          cuda_ok(cudaDeviceSynchronize(), "parallel forward");
          const std::vector<std::uint16_t> got = d_out.download();
          const std::string what = std::string(shard_kind_name(kind)) + " in=" + (in == TokenLayout::Sequence ? "seq" : "rep") +
                                   " out=" + (out == TokenLayout::Sequence ? "seq" : "rep") + " " + activation_kind_name(act.kind);
          EXPECT_LT(relative_frobenius(got, want), kTolerance) << what;
          EXPECT_EQ(got, plain_out) << what << ": world 1 must be the plain layer, bit for bit";
        }
  }
}

// Ids >= E are dropped by the EP mapping kernel just as the plain layer drops them.
TEST(ParallelWorld1, ExpertParallelDropsOutOfRangeIds) {
  REQUIRE_HOPPER();
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 256;
  spec.inter = 256;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const int T = 8, k = 2;
  const std::vector<std::uint16_t> hidden = random_hidden(T, 256, 1.0, 5);
  TopK topk = random_topk(T, k, 4, 6);
  std::vector<std::int32_t> ids = topk.ids;
  for (int t = 0; t < T; t += 2) ids[static_cast<std::size_t>(t) * k + 1] = 4 + t;  // out of range
  TopK dropped = topk;
  for (std::size_t i = 0; i < ids.size(); ++i) dropped.ids[i] = ids[i] >= 4 ? -1 : ids[i];
  const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), T, dropped, ActivationConfig::silu_mul());
  DeviceVector<std::uint16_t> d_hidden(hidden), d_out(static_cast<std::size_t>(T) * 256);
  DeviceVector<std::int32_t> d_ids(ids);
  DeviceVector<float> d_weights(topk.weights);
  MoeLayerOptions options;
  options.max_tokens = T;
  options.top_k = k;
  ParallelOptions p;
  p.shard = {ShardKind::Expert, 0, 1};
  ParallelMoeLayer layer(full, p, options);
  d_out.poison();
  layer.forward(d_hidden.get(), d_ids.get(), d_weights.get(), d_out.get(), T, nullptr);
  cuda_ok(cudaDeviceSynchronize(), "forward");
  EXPECT_LT(relative_frobenius(d_out.download(), want), kTolerance);
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

  REQUIRE_HOPPER();
  options.max_tokens = 4;
  ParallelMoeLayer layer(full, p, options);
  DeviceVector<std::uint16_t> d_hidden(5 * 64), d_out(5 * 64);
  DeviceVector<std::int32_t> d_ids(5 * 2);
  DeviceVector<float> d_weights(5 * 2);
  expect_error([&] { layer.forward(d_hidden.get(), d_ids.get(), d_weights.get(), d_out.get(), 5, nullptr); },
               "5 tokens over all ranks exceed max_tokens = 4");
  expect_error([&] { layer.forward(d_hidden.get(), d_ids.get(), d_weights.get(), d_out.get(), 0, nullptr); }, "num_tokens must be at least 1, got 0");
  expect_error([&] { layer.forward(nullptr, d_ids.get(), d_weights.get(), d_out.get(), 2, nullptr); }, "got a null one");
}

// A real one-rank communicator is accepted at world 1 and checked against the spec otherwise.
TEST(ParallelWorld1, ChecksTheCommunicatorAgainstTheSpec) {
  REQUIRE_HOPPER();
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
