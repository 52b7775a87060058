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
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"

using namespace mxmoe;

namespace {

constexpr double kBf16Tolerance = 1e-2;  // relative Frobenius; measured 2.6e-3 to 2.9e-3 (two bf16 roundings)



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
  const std::vector<std::uint16_t> hidden = verify::random_hidden(6, 2880, 78, 6.0);
  const TopK topk = verify::random_topk(6, 8, 3, 79, verify::TopKMask::slot_of_every(1, 3));
  for (const ActivationConfig& act : {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(10.0f), ActivationConfig::gpt_oss()}) {
    const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), 6, topk, act);
    for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
      for (int world : {2, 4, 8})
        EXPECT_LT(verify::relative_error(sharded_oracle(full, kind, world, hidden, topk, act), want), kBf16Tolerance)
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
  const std::vector<std::uint16_t> hidden = verify::random_hidden(9, 128, 91, 20.0);
  const TopK topk = verify::random_topk(9, 7, 2, 92, verify::TopKMask::slot_of_every(1, 3));
  const ActivationConfig act = ActivationConfig::gpt_oss();
  const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), 9, topk, act);
  for (int world : {3, 5, 7}) {
    EXPECT_LT(verify::relative_error(sharded_oracle(full, ShardKind::Tensor, world, hidden, topk, act), want), kBf16Tolerance) << "TP " << world;
    EXPECT_LT(verify::relative_error(sharded_oracle(full, ShardKind::Expert, world, hidden, topk, act), want), kBf16Tolerance) << "EP " << world;
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
  const std::vector<std::uint16_t> hidden = verify::random_hidden(5, 64, 3, 2.0);
  const TopK topk = verify::random_topk(5, 4, 2, 4, verify::TopKMask::slot_of_every(1, 3));
  const ActivationConfig act = ActivationConfig::clamped_silu_mul(10.0f);
  const std::vector<std::uint16_t> want = reference::moe_forward(full, hidden.data(), 5, topk, act);
  for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
    EXPECT_EQ(sharded_oracle(full, kind, 1, hidden, topk, act), want) << shard_kind_name(kind);
}
