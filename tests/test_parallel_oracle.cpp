// Tensor- and expert-parallel shards run through the CPU oracle: the combined per-rank outputs
// equal the unsharded oracle output to bf16 level. Each rank's output is rounded to bf16 (as a
// GPU rank's is before the all-reduce), so they cannot agree bit for bit; the exact float64
// recombination is in test_parallel_sharding.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "mxmoe/parallel.hpp"
#include "parallel_test_inputs.hpp"
#include "mxmoe/reference.hpp"

using namespace mxmoe;

namespace {

constexpr double kBf16Tolerance = 1e-2;  // relative Frobenius; measured 2.6e-3 to 2.9e-3 (two bf16 roundings)

double relative_frobenius(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& want) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = formats::bf16_to_float(got[i]), w = formats::bf16_to_float(want[i]);
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  return std::sqrt(diff / norm);  // NaN in `got` makes this NaN, which fails every EXPECT_LT
}

// Distinct random experts per token, positive weights; slot 1 of every third token is -1.
TopK random_topk(int tokens, int top_k, int num_experts, std::uint64_t seed) {
  return test::random_topk(tokens, top_k, num_experts, seed, test::SlotMask{1, 3, 0});
}
using test::random_hidden;

std::vector<std::uint16_t> sharded_oracle(const CanonicalMoeWeights& full, ShardKind kind, int world, const std::vector<std::uint16_t>& hidden,
                                          const TopK& topk, const ActivationConfig& act) {
  std::vector<std::vector<std::uint16_t>> per_rank;
  for (int r = 0; r < world; ++r) {
    const ShardSpec spec{kind, r, world};
    per_rank.push_back(reference::moe_forward(shard_weights(full, spec), hidden.data(), topk.num_tokens,
                                              map_topk_to_rank(topk, spec, full.num_experts), act));
  }
  return combine_rank_outputs(per_rank);
}

}  // namespace

TEST(ParallelOracle, CombinedShardsMatchTheUnshardedOracleGptOssShape) {
  SyntheticSpec spec;  // gpt-oss's H = I = 2880: TP 8 gives 360-wide slices that cut scale groups
  spec.num_experts = 8;
  spec.hidden = 2880;
  spec.inter = 2880;
  spec.with_biases = true;
  spec.seed = 77;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const std::vector<std::uint16_t> hidden = random_hidden(6, 2880, 6.0, 78);
  const TopK topk = random_topk(6, 3, 8, 79);
  for (const ActivationConfig& act : {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(10.0f), ActivationConfig::gpt_oss()}) {
    const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), 6, topk, act);
    for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
      for (int world : {2, 4, 8})
        EXPECT_LT(relative_frobenius(sharded_oracle(full, kind, world, hidden, topk, act), want), kBf16Tolerance)
            << shard_kind_name(kind) << " world " << world << " activation " << activation_kind_name(act.kind);
  }
}

TEST(ParallelOracle, UnevenSplitsMatchTheUnshardedOracle) {
  SyntheticSpec spec;
  spec.num_experts = 7;
  spec.hidden = 128;
  spec.inter = 96;
  spec.with_biases = true;
  spec.seed = 90;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const std::vector<std::uint16_t> hidden = random_hidden(9, 128, 20.0, 91);
  const TopK topk = random_topk(9, 2, 7, 92);
  const ActivationConfig act = ActivationConfig::gpt_oss();
  const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), 9, topk, act);
  for (int world : {3, 5, 7}) {
    EXPECT_LT(relative_frobenius(sharded_oracle(full, ShardKind::Tensor, world, hidden, topk, act), want), kBf16Tolerance) << "TP " << world;
    EXPECT_LT(relative_frobenius(sharded_oracle(full, ShardKind::Expert, world, hidden, topk, act), want), kBf16Tolerance) << "EP " << world;
  }
}

// World 1 is the unsharded layer: the same bits.
TEST(ParallelOracle, WorldOneIsBitIdentical) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 64;
  spec.with_biases = true;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const std::vector<std::uint16_t> hidden = random_hidden(5, 64, 2.0, 3);
  const TopK topk = random_topk(5, 2, 4, 4);
  const ActivationConfig act = ActivationConfig::clamped_silu_mul(10.0f);
  const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), 5, topk, act);
  for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
    EXPECT_EQ(sharded_oracle(full, kind, 1, hidden, topk, act), want) << shard_kind_name(kind);
}
