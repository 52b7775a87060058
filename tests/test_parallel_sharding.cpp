// Tensor- and expert-parallel sharding on the CPU: the split arithmetic, the bytes each rank gets,
// the rank-local routing ids, and that the per-rank expert MLPs (in float64, no rounding anywhere)
// sum to the unsharded layer's output.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "core/random.hpp"
#include "formats/mxfp4.hpp"
#include "test_util.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/parallel.hpp"
#include "mxmoe/verify.hpp"

using namespace mxmoe;
using ::testing::HasSubstr;

namespace {

// ---- a private float64 expert MLP, independent of the oracle ----

double dequant(const HostTensor& packed, const HostTensor& scales, std::int64_t row, std::int64_t k) {
  const std::int64_t K = packed.dim(2) * 2;
  const auto* p = packed.as<std::uint8_t>() + row * K / 2;
  const auto* s = scales.as<std::uint8_t>() + row * K / 32;
  return static_cast<double>(formats::e2m1_decode(formats::nibble_at(p, k))) * formats::e8m0_to_float(s[k / 32]);
}

// sum_k W[row, k] x[k] for a packed MXFP4 row of length K, in float64.
double row_dot(const HostTensor& packed, const HostTensor& scales, std::int64_t row, const double* x) {
  static const auto lut = [] {
    std::vector<double> t(16);
    for (int c = 0; c < 16; ++c) t[c] = formats::e2m1_decode(static_cast<std::uint8_t>(c));
    return t;
  }();
  const std::int64_t K = packed.dim(2) * 2;
  const auto* p = packed.as<std::uint8_t>() + row * K / 2;
  const auto* s = scales.as<std::uint8_t>() + row * K / 32;
  double total = 0.0;
  for (std::int64_t g = 0; g < K / 32; ++g) {
    double acc = 0.0;
    for (int i = 0; i < 16; ++i) {
      const std::uint8_t b = p[g * 16 + i];
      acc += lut[b & 15] * x[g * 32 + 2 * i] + lut[b >> 4] * x[g * 32 + 2 * i + 1];
    }
    total += acc * formats::e8m0_to_float(s[g]);
  }
  return total;
}

double activation64(double g, double u, const ActivationConfig& act) {
  const double L = act.limit;
  if (act.kind != ActivationKind::SiluMul) {
    g = std::min(g, L);
    u = std::max(-L, std::min(u, L));
  }
  if (act.kind == ActivationKind::GptOssSwiglu) return (u + 1.0) * g / (1.0 + std::exp(-static_cast<double>(act.alpha) * g));
  return g / (1.0 + std::exp(-g)) * u;
}

// The activation vector [I] of expert e for input x.
std::vector<double> expert_activation64(const CanonicalMoeWeights& w, int e, const double* x, const ActivationConfig& act) {
  const std::int64_t I = w.inter;
  std::vector<double> a(I);
  for (std::int64_t j = 0; j < I; ++j) {
    double g = row_dot(w.w13, w.w13_scale, e * 2 * I + j, x);
    double u = row_dot(w.w13, w.w13_scale, e * 2 * I + I + j, x);
    if (w.w13_bias) {
      g += w.w13_bias->as<float>()[e * 2 * I + j];
      u += w.w13_bias->as<float>()[e * 2 * I + I + j];
    }
    a[j] = activation64(g, u, act);
  }
  return a;
}

// out [T, H] in float64: sum over slots of weight * (W2 act + w2_bias); ids of -1 skipped.
std::vector<double> moe_forward64(const CanonicalMoeWeights& w, const std::vector<std::uint16_t>& hidden, const TopK& topk,
                                  const ActivationConfig& act) {
  const std::int64_t H = w.hidden;
  std::vector<double> out(static_cast<std::size_t>(topk.num_tokens * H), 0.0), x(H);
  for (int t = 0; t < topk.num_tokens; ++t) {
    for (std::int64_t h = 0; h < H; ++h) x[h] = formats::bf16_to_float(hidden[t * H + h]);
    for (int s = 0; s < topk.top_k; ++s) {
      const int e = topk.ids[t * topk.top_k + s];
      if (e < 0) continue;
      const double weight = topk.weights[t * topk.top_k + s];
      const std::vector<double> a = expert_activation64(w, e, x.data(), act);
      for (std::int64_t h = 0; h < H; ++h) {
        double y = row_dot(w.w2, w.w2_scale, e * H + h, a.data());
        if (w.w2_bias) y += w.w2_bias->as<float>()[e * H + h];
        out[t * H + h] += weight * y;
      }
    }
  }
  return out;
}


// ---- fresh random inputs ----


std::vector<ActivationConfig> all_activations() {
  return {ActivationConfig::silu_mul(), ActivationConfig::clamped_silu_mul(10.0f), ActivationConfig::gpt_oss()};
}

const CanonicalMoeWeights& gpt_oss_shaped_weights() {  // H = I = 2880, as gpt-oss; few experts
  static const CanonicalMoeWeights w = [] {
    SyntheticSpec spec;
    spec.num_experts = 8;
    spec.hidden = 2880;
    spec.inter = 2880;
    spec.with_biases = true;
    spec.seed = 2024;
    return make_synthetic_weights(spec);
  }();
  return w;
}

std::vector<double> sum_of_rank_outputs(const CanonicalMoeWeights& full, ShardKind kind, int world, const std::vector<std::uint16_t>& hidden,
                                        const TopK& topk, const ActivationConfig& act) {
  std::vector<double> sum;
  for (int r = 0; r < world; ++r) {
    const ShardSpec spec{kind, r, world};
    const std::vector<double> part = moe_forward64(shard_weights(full, spec), hidden, map_topk_to_rank(topk, spec, full.num_experts), act);
    if (sum.empty()) sum.assign(part.size(), 0.0);
    for (std::size_t i = 0; i < part.size(); ++i) sum[i] += part[i];
  }
  return sum;
}

}  // namespace

// ---- split arithmetic ----

TEST(ParallelSplit, RangesTileTheWholeAndFirstRanksTakeTheRemainder) {
  for (std::int64_t n : {1, 7, 8, 9, 96, 2880}) {
    for (int world = 1; world <= 9 && world <= n; ++world) {
      std::int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const IndexRange range = split_evenly(n, r, world);
        EXPECT_EQ(range.begin, next) << "n=" << n << " world=" << world << " rank=" << r;
        EXPECT_EQ(range.size(), n / world + (r < n % world ? 1 : 0)) << "n=" << n << " world=" << world << " rank=" << r;
        next = range.end;
      }
      EXPECT_EQ(next, n) << "n=" << n << " world=" << world;
    }
  }
}

TEST(ParallelSplit, GptOssInterOverEightRanksIs360WideWithGroupAlignedWindows) {
  for (int r = 0; r < 8; ++r) {
    const TensorSlice s = tensor_slice(2880, {ShardKind::Tensor, r, 8});
    EXPECT_EQ(s.owned.begin, 360 * r);
    EXPECT_EQ(s.owned.end, 360 * (r + 1));
    EXPECT_EQ(s.window.begin % 32, 0);
    EXPECT_EQ(s.window.end % 32, 0);
    EXPECT_LE(s.window.begin, s.owned.begin);
    EXPECT_GE(s.window.end, s.owned.end);
    EXPECT_GT(s.window.begin, s.owned.begin - 32);  // the smallest such window
    EXPECT_LT(s.window.end, s.owned.end + 32);
  }
  const TensorSlice r1 = tensor_slice(2880, {ShardKind::Tensor, 1, 8});
  EXPECT_EQ(r1.window.begin, 352);
  EXPECT_EQ(r1.window.end, 736);
}

TEST(ParallelSplit, AlignedSlicesNeedNoPadding) {
  const TensorSlice s = tensor_slice(2048, {ShardKind::Tensor, 3, 4});
  EXPECT_EQ(s.owned.begin, 1536);
  EXPECT_EQ(s.window.begin, s.owned.begin);
  EXPECT_EQ(s.window.end, s.owned.end);
}

TEST(ParallelSplit, ExpertRangesWithRemainder) {
  // 10 experts over 4 ranks: 3, 3, 2, 2.
  const std::int64_t begins[] = {0, 3, 6, 8}, ends[] = {3, 6, 8, 10};
  for (int r = 0; r < 4; ++r) {
    const IndexRange e = expert_range(10, {ShardKind::Expert, r, 4});
    EXPECT_EQ(e.begin, begins[r]);
    EXPECT_EQ(e.end, ends[r]);
  }
}

// ---- the bytes each rank gets ----

TEST(ParallelShardWeights, TensorSliceIsTheGlobalWindowWithForeignIndicesZeroed) {
  SyntheticSpec spec;
  spec.num_experts = 3;
  spec.hidden = 64;
  spec.inter = 96;  // 96 over 5 ranks: 20, 19, 19, 19, 19 -> odd boundaries inside packed bytes
  spec.with_biases = true;
  spec.seed = 7;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const std::int64_t E = 3, H = 64, I = 96;
  for (int world : {2, 5, 8}) {
    for (int r = 0; r < world; ++r) {
      const ShardSpec ss{ShardKind::Tensor, r, world};
      const TensorSlice s = tensor_slice(96, ss);
      const CanonicalMoeWeights w = shard_weights(full, ss);
      const std::int64_t W = s.window.size();
      ASSERT_EQ(w.inter, W);
      ASSERT_EQ(w.num_experts, E);
      for (std::int64_t e = 0; e < E; ++e)
        for (std::int64_t j = 0; j < W; ++j) {
          const std::int64_t gj = s.window.begin + j;
          const bool owned = gj >= s.owned.begin && gj < s.owned.end;
          for (int half = 0; half < 2; ++half) {
            const std::int64_t lrow = e * 2 * W + half * W + j, grow = e * 2 * I + half * I + gj;
            for (std::int64_t k = 0; k < H; ++k)
              ASSERT_EQ(dequant(w.w13, w.w13_scale, lrow, k), owned ? dequant(full.w13, full.w13_scale, grow, k) : 0.0)
                  << "w13 world " << world << " rank " << r << " e " << e << " j " << j << " k " << k;
            EXPECT_EQ(w.w13_bias->as<float>()[lrow], owned ? full.w13_bias->as<float>()[grow] : 0.0f);
          }
          for (std::int64_t h = 0; h < H; ++h) {
            ASSERT_EQ(dequant(w.w2, w.w2_scale, e * H + h, j), owned ? dequant(full.w2, full.w2_scale, e * H + h, gj) : 0.0)
                << "w2 world " << world << " rank " << r << " e " << e << " h " << h << " j " << j;
            if (j % 32 == 0) {  // every local scale group is the global one
              ASSERT_EQ(w.w2_scale.as<std::uint8_t>()[(e * H + h) * (W / 32) + j / 32],
                        full.w2_scale.as<std::uint8_t>()[(e * H + h) * (I / 32) + gj / 32]);
            }
          }
        }
      for (std::int64_t i = 0; i < E * H; ++i)
        ASSERT_EQ(w.w2_bias->as<float>()[i], r == 0 ? full.w2_bias->as<float>()[i] : 0.0f) << "w2_bias rank " << r << " index " << i;
      ASSERT_TRUE(w.router_weight.has_value());
      EXPECT_EQ(std::memcmp(w.router_weight->data(), full.router_weight->data(), full.router_weight->nbytes()), 0);
    }
  }
}

TEST(ParallelShardWeights, ExpertShardHoldsItsWholeExpertsAndNoRouter) {
  SyntheticSpec spec;
  spec.num_experts = 10;
  spec.hidden = 64;
  spec.inter = 64;
  spec.with_biases = true;
  spec.seed = 11;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  for (int r = 0; r < 4; ++r) {
    const ShardSpec ss{ShardKind::Expert, r, 4};
    const IndexRange er = expert_range(10, ss);
    const CanonicalMoeWeights w = shard_weights(full, ss);
    ASSERT_EQ(w.num_experts, er.size());
    EXPECT_FALSE(w.router_weight.has_value());
    EXPECT_FALSE(w.correction_bias.has_value());
    auto same_experts = [&](const HostTensor& local, const HostTensor& global, const char* name) {
      const std::size_t per_expert = global.nbytes() / static_cast<std::size_t>(global.dim(0));
      EXPECT_EQ(local.nbytes(), per_expert * er.size()) << name;
      EXPECT_EQ(std::memcmp(local.data(), global.as<std::uint8_t>() + er.begin * per_expert, local.nbytes()), 0) << name << " rank " << r;
    };
    same_experts(w.w13, full.w13, "w13");
    same_experts(w.w13_scale, full.w13_scale, "w13_scale");
    same_experts(w.w2, full.w2, "w2");
    same_experts(w.w2_scale, full.w2_scale, "w2_scale");
    same_experts(*w.w13_bias, *full.w13_bias, "w13_bias");
    same_experts(*w.w2_bias, *full.w2_bias, "w2_bias");
  }
}

TEST(ParallelShardWeights, WorldOneSharesTheFullTensors) {
  SyntheticSpec spec;
  spec.num_experts = 2;
  spec.hidden = 32;
  spec.inter = 32;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert}) {
    const CanonicalMoeWeights w = shard_weights(full, {kind, 0, 1});
    EXPECT_EQ(w.w13.data(), full.w13.data());
    EXPECT_EQ(w.w2_scale.data(), full.w2_scale.data());
    EXPECT_EQ(w.inter, 32);
    EXPECT_EQ(w.num_experts, 2);
  }
}

// Full weights as read-only views of one buffer (as a mapped checkpoint would give): the shard
// owns fresh storage and keeps no reference to the buffer.
TEST(ParallelShardWeights, WorksOnViewsAndKeepsNoReferenceToThem) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 96;
  spec.with_biases = true;
  const CanonicalMoeWeights owned = make_synthetic_weights(spec);
  auto mapping = std::make_shared<std::vector<std::uint8_t>>();
  std::vector<const HostTensor*> parts = {&owned.w13, &owned.w13_scale, &owned.w2, &owned.w2_scale, &*owned.w13_bias, &*owned.w2_bias,
                                          &*owned.router_weight, &*owned.correction_bias};
  std::vector<std::size_t> offsets;
  for (const HostTensor* t : parts) {
    offsets.push_back(mapping->size());
    mapping->insert(mapping->end(), t->as<std::uint8_t>(), t->as<std::uint8_t>() + t->nbytes());
  }
  const std::vector<std::uint8_t> before = *mapping;
  auto view_of = [&](int i) { return HostTensor::view(parts[i]->dtype(), parts[i]->shape(), mapping->data() + offsets[i], mapping); };
  CanonicalMoeWeights full;
  full.num_experts = 4;
  full.hidden = 64;
  full.inter = 96;
  full.w13 = view_of(0);
  full.w13_scale = view_of(1);
  full.w2 = view_of(2);
  full.w2_scale = view_of(3);
  full.w13_bias = view_of(4);
  full.w2_bias = view_of(5);
  full.router_weight = view_of(6);
  full.correction_bias = view_of(7);
  const long refs_before = mapping.use_count();
  for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert}) {
    CanonicalMoeWeights w = shard_weights(full, {kind, 0, 2});
    EXPECT_EQ(mapping.use_count(), refs_before) << shard_kind_name(kind);
    EXPECT_NO_THROW(w.w2.mutable_data());
    const CanonicalMoeWeights from_owned = shard_weights(owned, {kind, 0, 2});
    EXPECT_EQ(std::memcmp(w.w2.data(), from_owned.w2.data(), w.w2.nbytes()), 0);
    EXPECT_EQ(std::memcmp(w.w13_scale.data(), from_owned.w13_scale.data(), w.w13_scale.nbytes()), 0);
  }
  EXPECT_EQ(*mapping, before);
}

// A NaN scale byte is refused when it is in the rank's own slice, and never read otherwise.
TEST(ParallelShardWeights, NaNScaleIsCheckedOnlyInTheRanksOwnSlice) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 64;
  CanonicalMoeWeights full = make_synthetic_weights(spec);
  full.w2_scale.mutable_as<std::uint8_t>()[full.w2_scale.nbytes() - 1] = formats::kE8m0Nan;  // last expert
  EXPECT_NO_THROW(shard_weights(full, {ShardKind::Expert, 0, 2}));
  try {
    shard_weights(full, {ShardKind::Expert, 1, 2});
    FAIL() << "a NaN scale in rank 1's experts was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_THAT(e.what(), HasSubstr("w2_scale"));
    EXPECT_THAT(e.what(), HasSubstr("0xFF"));
  }
}

// ---- rank-local routing ids and the combine ----

TEST(ParallelTopK, ExpertParallelMapsOwnedIdsToLocalAndOthersToMinusOne) {
  TopK t;
  t.num_tokens = 3;
  t.top_k = 2;
  t.ids = {0, 5, -1, 3, 7, 4};
  t.weights = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
  // 8 experts over 3 ranks: [0,3), [3,6), [6,8).
  const TopK r1 = map_topk_to_rank(t, {ShardKind::Expert, 1, 3}, 8);
  EXPECT_EQ(r1.ids, (std::vector<std::int32_t>{-1, 2, -1, 0, -1, 1}));
  EXPECT_EQ(r1.weights, t.weights);
  const TopK r2 = map_topk_to_rank(t, {ShardKind::Expert, 2, 3}, 8);
  EXPECT_EQ(r2.ids, (std::vector<std::int32_t>{-1, -1, -1, -1, 1, -1}));
  const TopK tp = map_topk_to_rank(t, {ShardKind::Tensor, 2, 3}, 8);
  EXPECT_EQ(tp.ids, t.ids);
  EXPECT_EQ(tp.weights, t.weights);
}

TEST(ParallelCombine, SumsInFloatAndRoundsOnce) {
  SplitMix64 rng(99);
  std::vector<std::vector<std::uint16_t>> parts(4, std::vector<std::uint16_t>(257));
  for (auto& p : parts)
    for (auto& v : p) v = formats::float_to_bf16(static_cast<float>(rng.normal() * 3.0));
  const std::vector<std::uint16_t> out = combine_rank_outputs(parts);
  ASSERT_EQ(out.size(), 257u);
  for (std::size_t i = 0; i < out.size(); ++i) {
    double exact = 0.0;
    for (const auto& p : parts) exact += formats::bf16_to_float(p[i]);
    const double got = formats::bf16_to_float(out[i]);
    EXPECT_LE(std::fabs(got - exact), std::fabs(exact) * (1.0 / 256.0) + 1e-30) << "index " << i;  // half a bf16 ulp
  }
}

// ---- recombination is exact (float64 MLP, no rounding) ----

TEST(ParallelRecombine, RankOutputsSumToTheUnshardedLayerForTpAndEp248AllActivations) {
  const CanonicalMoeWeights& full = gpt_oss_shaped_weights();
  const std::vector<std::uint16_t> hidden = verify::random_hidden(3, 2880, 31, 6.0);  // large enough that the clamps bite
  const TopK topk = verify::random_topk(3, 8, 2, 32, verify::TopKMask::slot_of_every(0, 2, 1));
  for (const ActivationConfig& act : all_activations()) {
    const std::vector<double> want = moe_forward64(full, hidden, topk, act);
    for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
      for (int world : {2, 4, 8}) {
        const double rel = verify::relative_error(sum_of_rank_outputs(full, kind, world, hidden, topk, act), want);
        EXPECT_LT(rel, 1e-12) << shard_kind_name(kind) << " world " << world << " activation " << activation_kind_name(act.kind);
      }
  }
}

TEST(ParallelRecombine, UnevenSplitsSumToTheUnshardedLayer) {
  SyntheticSpec spec;
  spec.num_experts = 7;
  spec.hidden = 96;
  spec.inter = 96;
  spec.with_biases = true;
  spec.seed = 5;
  const CanonicalMoeWeights full = make_synthetic_weights(spec);
  const std::vector<std::uint16_t> hidden = verify::random_hidden(5, 96, 41, 20.0);
  const TopK topk = verify::random_topk(5, 7, 3, 42, verify::TopKMask::slot_of_every(0, 2, 1));
  for (const ActivationConfig& act : all_activations()) {
    const std::vector<double> want = moe_forward64(full, hidden, topk, act);
    for (int world : {3, 5, 7}) {
      EXPECT_LT(verify::relative_error(sum_of_rank_outputs(full, ShardKind::Tensor, world, hidden, topk, act), want), 1e-12) << "TP " << world;
      EXPECT_LT(verify::relative_error(sum_of_rank_outputs(full, ShardKind::Expert, world, hidden, topk, act), want), 1e-12) << "EP " << world;
    }
  }
}

// Padding indices of a TP window activate to exactly 0 in every mode, and owned ones equal the
// unsharded activation bit for bit.
TEST(ParallelRecombine, PaddedIntermediatesActivateToExactlyZero) {
  const CanonicalMoeWeights& full = gpt_oss_shaped_weights();
  const std::vector<std::uint16_t> hidden = verify::random_hidden(1, 2880, 51, 6.0);
  std::vector<double> x(2880);
  for (int h = 0; h < 2880; ++h) x[h] = formats::bf16_to_float(hidden[h]);
  for (const ActivationConfig& act : all_activations()) {
    const std::vector<double> global = expert_activation64(full, 5, x.data(), act);
    for (int r : {0, 1, 7}) {
      const ShardSpec ss{ShardKind::Tensor, r, 8};
      const TensorSlice s = tensor_slice(2880, ss);
      const std::vector<double> local = expert_activation64(shard_weights(full, ss), 5, x.data(), act);
      int padded = 0;
      for (std::int64_t j = 0; j < s.window.size(); ++j) {
        const std::int64_t gj = s.window.begin + j;
        const bool owned = gj >= s.owned.begin && gj < s.owned.end;
        padded += owned ? 0 : 1;
        EXPECT_EQ(local[j], owned ? global[gj] : 0.0) << activation_kind_name(act.kind) << " rank " << r << " j " << j;
      }
      EXPECT_EQ(padded, 24) << "rank " << r;  // every window is 384 wide around 360 owned indices
    }
  }
}

// ---- bad input ----

namespace {
using test::expect_error;
}  // namespace

TEST(ParallelErrors, BadRankOrWorld) {
  expect_error([] { split_evenly(8, 2, 2); }, ErrorCode::InvalidArgument, "rank 2 is outside 0..1");
  expect_error([] { split_evenly(8, -1, 2); }, ErrorCode::InvalidArgument, "rank -1 is outside 0..1");
  expect_error([] { split_evenly(8, 0, 0); }, ErrorCode::InvalidArgument, "world size must be at least 1, got 0");
  expect_error([] { split_evenly(3, 0, 4); }, ErrorCode::InvalidArgument, "cannot split 3 items over 4 ranks");
  expect_error([] { expert_range(4, {ShardKind::Expert, 0, 8}); }, ErrorCode::InvalidArgument, "world size 8 exceeds the expert count E = 4");
  expect_error([] { tensor_slice(32, {ShardKind::Tensor, 0, 64}); }, ErrorCode::InvalidArgument, "world size 64 exceeds the intermediate size I = 32");
  expect_error([] { tensor_slice(100, {ShardKind::Tensor, 0, 2}); }, ErrorCode::Shape, "positive multiple of 32, got 100");
  expect_error([] { tensor_slice(64, {ShardKind::Expert, 0, 2}); }, ErrorCode::InvalidArgument, "tensor_slice needs a tensor-parallel spec");
  expect_error([] { expert_range(4, {ShardKind::Tensor, 0, 2}); }, ErrorCode::InvalidArgument, "expert_range needs an expert-parallel spec");
  expect_error([] { validate_shard_spec({static_cast<ShardKind>(7), 0, 1}, 4, 64); }, ErrorCode::InvalidArgument, "unknown shard kind 7");
}

TEST(ParallelErrors, ShardWeightsRefusesBadShapesAndSpecs) {
  SyntheticSpec spec;
  spec.num_experts = 2;
  spec.hidden = 64;
  spec.inter = 64;
  CanonicalMoeWeights full = make_synthetic_weights(spec);
  expect_error([&] { shard_weights(full, {ShardKind::Expert, 0, 3}); }, ErrorCode::InvalidArgument, "world size 3 exceeds the expert count E = 2");
  expect_error([&] { shard_weights(full, {ShardKind::Tensor, 4, 4}); }, ErrorCode::InvalidArgument, "rank 4 is outside 0..3");
  CanonicalMoeWeights bad = full;
  bad.w2 = HostTensor::zeros(DType::U8, {2, 64, 16});
  expect_error([&] { shard_weights(bad, {ShardKind::Tensor, 0, 2}); }, ErrorCode::Shape, "'w2' is U8 [2, 64, 16], expected U8 [2, 64, 32]");
  CanonicalMoeWeights missing = full;
  missing.w13_scale = HostTensor();
  expect_error([&] { shard_weights(missing, {ShardKind::Expert, 0, 2}); }, ErrorCode::NotFound, "lack tensor 'w13_scale'");
  CanonicalMoeWeights wrong_bias = full;
  wrong_bias.w2_bias = HostTensor::zeros(DType::BF16, {2, 64});
  expect_error([&] { shard_weights(wrong_bias, {ShardKind::Tensor, 0, 2}); }, ErrorCode::Shape, "'w2_bias' is BF16 [2, 64], expected F32 [2, 64]");
}

TEST(ParallelErrors, MapTopKRefusesBadIdsAndSizes) {
  TopK t;
  t.num_tokens = 2;
  t.top_k = 2;
  t.ids = {0, 1, 9, -1};
  t.weights = {1, 1, 1, 1};
  expect_error([&] { map_topk_to_rank(t, {ShardKind::Expert, 0, 2}, 8); }, ErrorCode::InvalidArgument,
               "expert id 9 of token 1, slot 0 is outside -1..7");
  t.ids = {0, -2, 1, 1};
  expect_error([&] { map_topk_to_rank(t, {ShardKind::Tensor, 0, 2}, 8); }, ErrorCode::InvalidArgument, "expert id -2 of token 0, slot 1");
  t.ids = {0, 1, 2};
  expect_error([&] { map_topk_to_rank(t, {ShardKind::Expert, 0, 2}, 8); }, ErrorCode::Shape, "got 3 ids and 4 weights");
  t.ids = {0, 1, 2, 3};
  expect_error([&] { map_topk_to_rank(t, {ShardKind::Expert, 0, 9}, 8); }, ErrorCode::InvalidArgument, "world size 9 exceeds the expert count E = 8");
  expect_error([&] { map_topk_to_rank(t, {ShardKind::Expert, 3, 2}, 8); }, ErrorCode::InvalidArgument, "rank 3 is outside 0..1");
  expect_error([&] { map_topk_to_rank(t, {ShardKind::Expert, 0, 1}, 0); }, ErrorCode::InvalidArgument, "expert count must be positive, got 0");
}

TEST(ParallelErrors, CombineRefusesNothingAndMismatchedSizes) {
  expect_error([] { combine_rank_outputs({}); }, ErrorCode::InvalidArgument, "no rank outputs given");
  expect_error([] { combine_rank_outputs({std::vector<std::uint16_t>(4), std::vector<std::uint16_t>(3)}); }, ErrorCode::Shape,
               "rank 1 gave 3 values, rank 0 gave 4");
}
