// The GEMM plan (src/kernels/gemm/plan.cpp): which kernel format and configuration a problem gets.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/gemm/direct_blocks.hpp"
#include "kernels/gemm/geometry.hpp"
#include "kernels/moe_gemm.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::kernels;
using mxmoe::test::expect_error;

TEST(GemmPlan, FormatFollowsGroupActivationsAndLargestScale) {
  EXPECT_EQ(choose_gemm_format(32, false), GemmFormat::Mxfp4);
  EXPECT_EQ(choose_gemm_format(32, false, {0, 0}), GemmFormat::Mxfp4);
  EXPECT_EQ(choose_gemm_format(32, false, {128, 0}), GemmFormat::Mxfp4);
  EXPECT_EQ(choose_gemm_format(32, false, {128, kUnknownScaleSpan}), GemmFormat::Mxfp4) << "no byte above 128: no shift";
  EXPECT_EQ(choose_gemm_format(16, false, {0, 0}), GemmFormat::Nvfp4Bf16);
  EXPECT_EQ(choose_gemm_format(16, true, {200, 200}), GemmFormat::Nvfp4F16) << "the E8M0 bytes mean nothing for NVFP4";
  EXPECT_STREQ(gemm_format_name(GemmFormat::Mxfp4Wide), "mxfp4-wide");
  EXPECT_STREQ(gemm_format_name(GemmFormat::Mxfp4Shifted), "mxfp4-shifted");
  // W4A8 plans wgmma from above 0.2 pairs per expert (not in the batch-invariant mode): blocks of 32
  // up to 16 pairs, of 64 up to 40, then blocks of 128.
  EXPECT_EQ(choose_gemm(256, 8, 256, false, true), GemmTile::WgmmaSmall);   // 8 pairs
  EXPECT_EQ(choose_gemm(16, 6, 256, false, true), GemmTile::WgmmaSmall);    // 0.375 pairs (dsv4-flash 16 tokens)
  EXPECT_EQ(choose_gemm(8, 4, 128, false, true), GemmTile::WgmmaSmall);     // 0.25 pairs (gpt-oss-120b 8 tokens)
  EXPECT_EQ(choose_gemm(8, 6, 256, false, true), GemmTile::Decode);         // 0.19 pairs, as bf16
  EXPECT_EQ(choose_gemm(512, 8, 256, false, true), GemmTile::WgmmaSmall);   // 16 pairs
  EXPECT_EQ(choose_gemm(513, 8, 256, false, true), GemmTile::WgmmaNarrow);
  EXPECT_EQ(choose_gemm(1024, 6, 256, false, true), GemmTile::WgmmaNarrow);  // 24 pairs: narrow for W4A8, small for bf16
  EXPECT_EQ(choose_gemm(1280, 8, 256, false, true), GemmTile::WgmmaNarrow);  // 40 pairs
  EXPECT_EQ(choose_gemm(1281, 8, 256, false, true), GemmTile::Wgmma);
  EXPECT_EQ(choose_gemm(4096, 8, 256, false, true), GemmTile::Wgmma);
  EXPECT_EQ(choose_gemm(256, 8, 256, false, false), GemmTile::WgmmaSmall);  // bf16: 8 pairs
  EXPECT_EQ(choose_gemm(256, 8, 256, true, true), GemmTile::Small);     // batch-invariant: mma.sync
  EXPECT_EQ(choose_gemm(2, 8, 2, false, true), GemmTile::Tiny);         // two tokens stay tiny
  // W4A8: every MXFP4 scale summary folds (Mxfp4E4m3); NVFP4 and fp16 activations are refused.
  EXPECT_EQ(choose_gemm_format(32, false, {254, 200}, ActivationPrecision::Fp8PerToken), GemmFormat::Mxfp4E4m3);
  EXPECT_STREQ(gemm_format_name(GemmFormat::Mxfp4E4m3), "mxfp4-e4m3");
  EXPECT_THROW(choose_gemm_format(16, false, {}, ActivationPrecision::Fp8PerToken), Error);
  EXPECT_THROW(choose_gemm_format(32, true, {}, ActivationPrecision::Fp8PerToken), Error);
  EXPECT_STREQ(gemm_format_name(GemmFormat::Nvfp4F16), "nvfp4-f16");
}

// Bytes above 128 run Mxfp4Shifted while every weight row holding one spans at most 128 bytes (its
// smallest byte then stays >= the shift max - 128); only a wider span needs Mxfp4Wide.
TEST(GemmPlan, BytesAbove128ShiftUnlessARowSpansMoreThan128) {
  EXPECT_EQ(choose_gemm_format(32, false, {129, 0}), GemmFormat::Mxfp4Shifted);
  EXPECT_EQ(choose_gemm_format(32, false, {129, 129}), GemmFormat::Mxfp4Wide) << "bytes 0 and 129 in one row";
  EXPECT_EQ(choose_gemm_format(32, false, {254, 128}), GemmFormat::Mxfp4Shifted) << "126..254: lowered to 0..128";
  EXPECT_EQ(choose_gemm_format(32, false, {254, 129}), GemmFormat::Mxfp4Wide) << "125..254";
  EXPECT_EQ(choose_gemm_format(32, false, {200, 0}), GemmFormat::Mxfp4Shifted);
  EXPECT_EQ(choose_gemm_format(32, false, {200, kUnknownScaleSpan}), GemmFormat::Mxfp4Wide) << "bytes prepared unshifted";
}

TEST(GemmPlan, RefusesWhatNoKernelRuns) {
  expect_error([] { choose_gemm_format(32, true, {127, 0}); }, ErrorCode::DType, "need bf16 activations");
  expect_error([] { choose_gemm_format(8, false, {127, 0}); }, ErrorCode::InvalidArgument, "got 8");
  expect_error([] { choose_gemm_format(32, false, {255, 0}); }, ErrorCode::InvalidArgument, "0..254");
  expect_error([] { choose_gemm_format(32, false, {200, 256}); }, ErrorCode::InvalidArgument, "0..255");
}

// K slices (gemm/geometry.hpp): Tiny's four warps form two slices over two row tiles, so a CTA
// still computes 32 rows (what the plan counts) with twice the warps; the other configurations
// keep one warp per tile and the whole K.
TEST(GemmPlan, KSlicesShareTheRowsNotTheCtaCount) {
  using Tiny = gemm::CtaTiles<GemmTiny>;
  EXPECT_EQ(Tiny::kKSlices, 2);
  EXPECT_EQ(Tiny::kTileWarps, 2);
  EXPECT_EQ(Tiny::kRowsPerCta, 32);
  EXPECT_EQ(GemmTiny::kWarps, Tiny::kKSlices * Tiny::kTileWarps);
  EXPECT_EQ(GemmTiny::kChunksPerStage % Tiny::kKSlices, 0) << "each slice takes whole chunks of every stage";
  EXPECT_EQ(gemm::CtaTiles<GemmDecode>::kKSlices, 1);
  EXPECT_EQ(gemm::CtaTiles<GemmDecode>::kRowsPerCta, 64);
  EXPECT_EQ(gemm::CtaTiles<GemmWgmma>::kKSlices, 1);
  EXPECT_EQ(gemm_ctas_per_block(GemmTile::Tiny, 4096), 128) << "4096 rows / 32 per CTA";
  EXPECT_EQ(gemm_ctas_per_block(GemmTile::Tiny, 2 * 2880), 180) << "gpt-oss-120b's GEMM1";
  // The mma.sync geometry copies with every warp: Tiny's 128 threads split a stage's 256 weight
  // pieces and 256 activation pieces evenly.
  using G = gemm::Geometry<GemmTiny, 32>;
  EXPECT_EQ(G::kThreads, 128);
  EXPECT_EQ(G::kWeightBytes / 16 % G::kThreads, 0);
  EXPECT_EQ(GemmTiny::kTokens * G::kStageK * 2 / 16 % G::kThreads, 0);
}

TEST(GemmPlan, ConfigurationsByPairsPerExpert) {
  EXPECT_EQ(choose_gemm(1, 8, 256), GemmTile::Tiny);
  EXPECT_EQ(choose_gemm(64, 8, 256), GemmTile::Decode);
  EXPECT_EQ(choose_gemm(208, 8, 256), GemmTile::Decode) << "6.5 pairs per expert";
  EXPECT_EQ(choose_gemm(209, 8, 256), GemmTile::WgmmaSmall) << "above 6.5 pairs: warpgroup MMA, blocks of 32";
  EXPECT_EQ(choose_gemm(256, 8, 256), GemmTile::WgmmaSmall);
  EXPECT_EQ(choose_gemm(1024, 6, 256), GemmTile::WgmmaSmall) << "dsv4-flash 1024 tokens: 24 pairs";
  EXPECT_EQ(choose_gemm(769, 8, 256), GemmTile::WgmmaNarrow) << "above 24 pairs: blocks of 64";
  EXPECT_EQ(choose_gemm(1024, 8, 256), GemmTile::WgmmaNarrow) << "32 pairs";
  EXPECT_EQ(choose_gemm(1280, 8, 256), GemmTile::WgmmaNarrow) << "40 pairs";
  EXPECT_EQ(choose_gemm(1281, 8, 256), GemmTile::Wgmma) << "above 40 pairs: blocks of 128";
  EXPECT_EQ(choose_gemm(4096, 8, 256), GemmTile::Wgmma);
  EXPECT_EQ(choose_gemm(512, 8, 256, true), GemmTile::Medium) << "batch-invariant: 16 pairs on mma.sync";
  EXPECT_EQ(choose_gemm(320, 8, 256, true), GemmTile::Small);
  EXPECT_EQ(gemm_tokens_per_block(GemmTile::Wgmma), 128);
  EXPECT_EQ(gemm_tokens_per_block(GemmTile::WgmmaNarrow), 64);
  EXPECT_EQ(gemm_ctas_per_block(GemmTile::WgmmaNarrow, 4096), 22) << "the same 12 tiles per CTA as wgmma";
  EXPECT_EQ(gemm_tokens_per_block(GemmTile::WgmmaSmall), 32);
  EXPECT_EQ(choose_gemm(4096, 8, 256, true), GemmTile::Prefill) << "batch-invariant: mma.sync only";
  EXPECT_EQ(choose_gemm(1024, 8, 256, true), GemmTile::Prefill);
  EXPECT_EQ(choose_gemm(1, 8, 256, true), GemmTile::Decode) << "batch-invariant: not Tiny's K slices";
  EXPECT_EQ(choose_gemm(2, 8, 256, true), GemmTile::Decode);
  EXPECT_EQ(choose_gemm(2, 8, 256, false), GemmTile::Tiny);
  // GEMM2's SM rule (the shape's intermediate unknown: the latency model is off).
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 4096, 0, 2, 2, 132, false), kTinyGemm2Splits) << "2 blocks x 128 CTAs < 3 per SM";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 4096, 0, 2, 2, 132, true), 1) << "batch-invariant: no split";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 4096, 0, 8, 8, 132, false), 1) << "enough CTAs";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 4096, 0, 2, 2, 0, false), 1) << "SM count unknown";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Decode, 4096, 0, 2, 2, 132, false), 1) << "the SM rule is Tiny's";
  EXPECT_EQ(gemm_ctas_per_block(GemmTile::Wgmma, 4096), 22) << "12 tiles of 16 rows per CTA";
  EXPECT_EQ(gemm_tokens_per_block(GemmTile::Prefill), 64);
  EXPECT_EQ(gemm_ctas_per_block(GemmTile::Decode, 4096), 64) << "4 tiles of 16 rows per CTA";
  expect_error([] { gemm_tokens_per_block(GemmTile::Auto); }, ErrorCode::InvalidArgument, "names no configuration");
}

// One dsv4-flash expert's prepared w13 + w2 bytes (12 MiB): large enough for the wide lane.
constexpr std::int64_t kBigExpert = std::int64_t{3} * 4096 * 2048 / 2;

// Auto adds the wide (wgmma) lane for experts holding more than one narrow block, from
// kWideLaneMinTokens tokens, except where the narrow configuration is Tiny or already wgmma, for a
// forced tile, and in the batch-invariant mode.
TEST(GemmPlan, WideLaneForExpertsBeyondOneNarrowBlock) {
  const GemmLanes mid = plan_gemm_lanes(GemmTile::Auto, {256, 6, 256, kBigExpert});
  EXPECT_EQ(mid.narrow, GemmTile::Decode);
  EXPECT_EQ(mid.wide_from, gemm_tokens_per_block(GemmTile::Decode) + 1);
  EXPECT_EQ(mid.wide, GemmTile::WgmmaNarrow) << "Decode's overflow: blocks of 64, not 128";
  EXPECT_EQ(gemm_lanes_name(mid), "decode + wgmma-narrow from 9 pairs");
  EXPECT_EQ(mid.narrow_max_blocks, 256) << "each narrow expert holds at most 8 pairs: one block each, <= E";
  EXPECT_EQ(mid.wide_max_blocks, 1536 / 64 + 1536 / 9);
  const GemmLanes small = plan_gemm_lanes(GemmTile::Auto, {256, 8, 256, kBigExpert});
  EXPECT_EQ(small.narrow, GemmTile::WgmmaSmall);
  EXPECT_EQ(small.wide_from, 33);
  EXPECT_EQ(small.wide, GemmTile::Wgmma);
  EXPECT_EQ(gemm_lanes_name(small), "wgmma-small + wgmma from 33 pairs");
  const GemmLanes narrow = plan_gemm_lanes(GemmTile::Auto, {1024, 8, 256, kBigExpert});
  EXPECT_EQ(narrow.narrow, GemmTile::WgmmaNarrow);
  EXPECT_EQ(narrow.wide_from, 65) << "experts above one block of 64 run blocks of 128";
  EXPECT_EQ(gemm_lanes_name(narrow), "wgmma-narrow + wgmma from 65 pairs");
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {kWideLaneMinTokens - 1, 8, 256, kBigExpert}).wide_from, 0) << "too few tokens";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {kWideLaneMinTokens, 8, 256, kBigExpert}).wide_from, 9);
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {4096, 8, 256, kBigExpert}).narrow, GemmTile::Wgmma);
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {4096, 8, 256, kBigExpert}).wide_from, 0) << "every expert is on wgmma already";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {1024, 8, 256, kBigExpert, true}).wide_from, 0) << "batch-invariant: mma.sync only";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Medium, {1024, 8, 256, kBigExpert}).wide_from, 0) << "a forced tile runs alone";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {64, 8, 256, kWideLaneMinExpertBytes - 1}).wide_from, 0)
      << "small experts at a few tens of tokens: re-reading costs less than the lane";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {kWideLaneSmallExpertMinTokens - 1, 8, 256, kWideLaneMinExpertBytes - 1}).wide_from, 0);
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {64, 8, 256, kWideLaneMinExpertBytes}).wide_from, 9);
  const GemmLanes hot_small = plan_gemm_lanes(GemmTile::Auto, {kWideLaneSmallExpertMinTokens, 3, 318, kWideLaneMinExpertBytes / 2});
  EXPECT_EQ(hot_small.narrow, GemmTile::Decode) << "2.4 pairs per expert on average";
  EXPECT_EQ(hot_small.wide_from, 9) << "from 256 tokens a few hot small experts may hold hundreds of pairs";
  EXPECT_EQ(hot_small.wide, GemmTile::WgmmaNarrow);
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {kWideLaneSmallExpertMinTokens, 3, 318, kWideLaneSmallExpertMinBytes - 1}).wide_from, 0)
      << "experts below 1 MB: a few hot ones' re-reads stay in L2";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {kWideLaneSmallExpertMinTokens, 2, 318, kWideLaneMinExpertBytes / 2}).wide_from, 0)
      << "512 pairs: hot experts hold too few to pay for the lane";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {kWideLaneSmallExpertMinTokens - 1, 8, 318, kWideLaneMinExpertBytes / 2}).wide_from, 0)
      << "below 256 tokens, whatever the pairs";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {1024, 8, 256, kWideLaneMinExpertBytes - 1}).wide_from, 0)
      << "small experts under a wgmma narrow configuration (32 pairs per expert): its blocks hold 32 already";
  EXPECT_EQ(gemm_lanes_name(plan_gemm_lanes(GemmTile::Medium, {1024, 8, 256, kBigExpert})), "medium");
  const GemmLanes one = plan_gemm_lanes(GemmTile::Auto, {1, 8, 256, kBigExpert});
  EXPECT_EQ(one.narrow, GemmTile::Tiny);
  EXPECT_EQ(one.wide_from, 0);
  EXPECT_TRUE(one.direct) << "one token: a block per routed pair, no alignment";
  EXPECT_EQ(one.narrow_max_blocks, 8);
  EXPECT_EQ(gemm_lanes_name(one), "tiny (direct: no alignment)");
  const GemmLanes two = plan_gemm_lanes(GemmTile::Auto, {2, 8, 256, kBigExpert, false, false, 4096, 1024});
  EXPECT_TRUE(two.direct && two.direct_groups) << "two tokens: an expert's pairs in its first pair's block";
  EXPECT_EQ(two.narrow_max_blocks, 16);
  EXPECT_FALSE(one.direct_groups) << "one token: a block per pair";
  EXPECT_FALSE(plan_gemm_lanes(GemmTile::Auto, {2, 8, 256, kBigExpert}).direct) << "I not given";
  EXPECT_TRUE(plan_gemm_lanes(GemmTile::Auto, {2, 8, 256, kBigExpert, false, false, 4096, 2048}).direct)
      << "128 x 16 CTAs: at the bound";
  EXPECT_FALSE(plan_gemm_lanes(GemmTile::Auto, {2, 8, 256, kBigExpert, false, false, 4096, 2080}).direct)
      << "130 x 16 CTAs: above it";
  EXPECT_FALSE(plan_gemm_lanes(GemmTile::Auto, {2, 6, 13, kBigExpert, false, false, 7936, 4928}).direct)
      << "e13 h7936 i4928 k6: 308 x 12 CTAs in several waves, slower direct";
  const GemmLanes aligned_two = plan_gemm_lanes(GemmTile::Tiny, {2, 9, 256, kBigExpert, false, false, 4096, 4096});
  EXPECT_FALSE(aligned_two.direct) << "18 pairs: more than one pass of the ids";
  EXPECT_EQ(aligned_two.narrow_max_blocks, 2 + 18) << "floor(18 / 8) + min(256, 18)";
  const GemmLanes three = plan_gemm_lanes(GemmTile::Tiny, {3, 8, 256, kBigExpert});
  EXPECT_FALSE(three.direct) << "three tokens: aligned, even on Tiny";
  EXPECT_EQ(three.narrow_max_blocks, 3 + 24) << "floor(24 / 8) + min(256, 24)";
  EXPECT_TRUE(plan_gemm_lanes(GemmTile::Auto, {1, 16, 256, kBigExpert}).direct) << "16 pairs";
  EXPECT_FALSE(plan_gemm_lanes(GemmTile::Auto, {2, 9, 256, kBigExpert}).direct) << "18 pairs: aligned";
  EXPECT_FALSE(plan_gemm_lanes(GemmTile::Auto, {1, 17, 256, kBigExpert}).direct) << "17 pairs: aligned";
  EXPECT_TRUE(plan_gemm_lanes(GemmTile::Decode, {1, 8, 256, kBigExpert}).direct) << "Decode's blocks hold 8 tokens too";
  EXPECT_FALSE(plan_gemm_lanes(GemmTile::Small, {1, 8, 256, kBigExpert}).direct) << "only the 8-token configurations run direct";
  EXPECT_TRUE(plan_gemm_lanes(GemmTile::Auto, {1, 8, 256, kBigExpert, true}).direct) << "batch-invariant: the same sums";
}

// The grid rows of each lane bound the blocks the align kernel can make, for any routing: drawn
// count vectors (uniform, one hot expert, a few hot, all on one) against the lanes' rule.
TEST(GemmPlan, LaneBlockBoundsHoldForAnyRouting) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 3000; ++trial) {
    const int E = 1 + static_cast<int>(rng() % 300), k = 1 + static_cast<int>(rng() % std::min(E, 8));
    const int T = 1 + static_cast<int>(rng() % 3000);
    std::vector<int> count(static_cast<std::size_t>(E), 0);
    const int hot = 1 + static_cast<int>(rng() % 4), mode = trial % 4;
    for (int t = 0; t < T; ++t)
      for (int s = 0; s < k; ++s) {
        int e = static_cast<int>(rng() % E);
        if (mode == 1 && rng() % 2) e = 0;
        if (mode == 2 && rng() % 3) e = static_cast<int>(rng() % hot) % E;
        if (mode == 3) e = E - 1;
        ++count[static_cast<std::size_t>(e)];
      }
    for (GemmTile tile : {GemmTile::Auto, GemmTile::Decode, GemmTile::Wgmma, GemmTile::WgmmaNarrow, GemmTile::WgmmaSmall}) {
      const GemmLanes l = plan_gemm_lanes(tile, {T, k, E, kBigExpert});
      const int nb = gemm_tokens_per_block(l.narrow), wb = gemm_tokens_per_block(l.wide);
      int narrow = 0, wide = 0;
      if (l.direct) {  // a block per routed pair
        ASSERT_EQ(l.narrow_max_blocks, T * k);
        continue;
      }
      for (int c : count) {
        if (l.wide_from > 0 && c >= l.wide_from) wide += (c + wb - 1) / wb;
        else narrow += (c + nb - 1) / nb;
      }
      ASSERT_LE(narrow, l.narrow_max_blocks) << "E=" << E << " k=" << k << " T=" << T << " mode " << mode;
      ASSERT_LE(wide, l.wide_max_blocks) << "E=" << E << " k=" << k << " T=" << T << " mode " << mode;
      if (l.wide_from == 0) {
        ASSERT_EQ(wide, 0);
      }
    }
  }
}

// GEMM1's K split: Tiny only, when its CTAs are few and K long; never in the batch-invariant mode.
TEST(GemmPlan, Gemm1SplitsKOnFewTinyCtasOverALongK) {
  // e318 h3712 i320 k2 at one token: 2 direct blocks x 20 CTAs of 32 rows, 58 chunks of K.
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 640, 3712, 2, false), kMaxGemm1Splits) << "40, 80, 160 CTAs < 256";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 640, 3712, 2, true), 1) << "batch-invariant: no split";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Decode, 640, 3712, 2, false), 1) << "only Tiny splits GEMM1";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Wgmma, 640, 3712, 2, false), 1);
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 640, 3712, 4, false), 4) << "80 CTAs: 8 saves little more than 4";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 640, 256, 2, false), 1) << "4 chunks: one stage, nothing to split";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 640, 512, 2, false), 1) << "8 chunks: half a latency to save";
  // The sweep's shapes where splitting whenever CTAs were few lost 9-15% (or gained nothing): the
  // reduce kernel costs more than a short K or an already streaming GEMM1 saves.
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 1152, 480, 3, false), 1) << "e36 h480 i576 k3, 108 CTAs";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 1024, 736, 2, false), 1) << "e279 h736 i512 k2, 64 CTAs";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 3776, 2112, 2, false), 1) << "e41 h2112 i1888 k2, 236 CTAs";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 768, 3392, 6, false), 1) << "e434 h3392 i384 k6, 144 CTAs";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 64 * 32, 3712, 4, false), 1) << "256 CTAs: never";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 192, 2880, 4, false), 8) << "gpt-oss-like i96: 24 CTAs";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 640, 3712, 0, false), 1) << "no blocks";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 4096, 4096, 6, false), 1) << "dsv4-flash one token: 768 CTAs";
  EXPECT_EQ(gemm1_k_splits(GemmTile::Tiny, 5760, 2880, 4, false), 1) << "gpt-oss-120b one token: 720 CTAs";
  // Through the plan: the shape must be known.
  const std::int64_t bytes = std::int64_t{3} * 3712 * 320 / 2;
  const GemmLanes one = plan_gemm_lanes(GemmTile::Auto, {1, 2, 318, bytes, false, false, 3712, 320});
  EXPECT_TRUE(one.direct);
  EXPECT_EQ(one.gemm1_splits, 8);
  EXPECT_EQ(gemm_lanes_name(one), "tiny (direct: no alignment), w13 K in 8 splits");
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {1, 2, 318, bytes}).gemm1_splits, 1) << "shape not given";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {1, 2, 318, bytes, true, false, 3712, 320}).gemm1_splits, 1) << "batch-invariant";
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {64, 2, 318, bytes, false, false, 3712, 320}).gemm1_splits, 1) << "Decode";
}

// GEMM2's K split: Tiny's SM rule, and GEMM1's latency model with K = I on Tiny and Decode (a small
// hidden size gives GEMM2 few CTAs, each streaming a long intermediate); the combine adds the splits.
TEST(GemmPlan, Gemm2SplitsKOnFewCtasOverALongIntermediate) {
  // e207 h320 i2304 k4, one token: 4 direct blocks x 10 Tiny CTAs, 36 chunks of 64 each (2.25
  // latencies at 16 chunks in flight): 8 splits leave 5 chunks, the bytes a quarter of a latency.
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 320, 2304, 4, 4, 132, false), 8);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 320, 2304, 4, 4, 132, true), 1) << "batch-invariant";
  // e48 h352 i2368 k6, four tokens on Decode: 27 blocks x 6 CTAs, 37 chunks at 12 in flight; past
  // 2 splits the whole GEMM's bytes (2 latencies) bound it.
  EXPECT_EQ(gemm2_k_splits(GemmTile::Decode, 352, 2368, 24, 27, 132, false), 2);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Decode, 352, 2368, 32, 12, 132, false), 4) << "12 blocks: the bytes bound less";
  // The presets keep their plans: dsv4-flash one token streams already (768 CTAs); gpt-oss-120b
  // keeps the SM rule's 2 (360 CTAs), where 4 would save no more (the bytes bound it).
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 4096, 2048, 6, 6, 132, false), 1);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 2880, 2880, 4, 4, 132, false), 2);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Decode, 4096, 2048, 24, 27, 132, false), 1) << "dsv4-flash 4 tokens: 1728 CTAs";
  // The workspace's bound: pairs x splits <= kGemm2SplitMaxPairs.
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 320, 2304, 32, 4, 132, false), 8) << "32 x 8 = 256";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 320, 2304, 33, 4, 132, false), 4) << "33 x 8 > 256";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 320, 2304, 65, 4, 132, false), 2);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 320, 2304, 129, 4, 132, false), 1);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Tiny, 4096, 0, 200, 2, 132, false), 1) << "the SM rule under the bound too";
  EXPECT_EQ(gemm2_k_splits(GemmTile::Small, 352, 2368, 24, 27, 132, false), 1) << "Tiny and Decode only";
  EXPECT_EQ(gemm2_k_splits(GemmTile::WgmmaSmall, 352, 2368, 24, 27, 132, false), 1);
  EXPECT_EQ(gemm2_k_splits(GemmTile::Decode, 352, 96, 24, 27, 132, false), 1) << "3 chunks: nothing to split";
  // Through the plan, which names it; no split beside a wide lane.
  const std::int64_t bytes = std::int64_t{3} * 320 * 2304 / 2;
  const GemmLanes one = plan_gemm_lanes(GemmTile::Auto, {1, 4, 207, bytes, false, false, 320, 2304, 132});
  EXPECT_EQ(one.gemm2_splits, 8);
  EXPECT_EQ(gemm_lanes_name(one), "tiny (direct: no alignment), w2 K in 8 splits");
  EXPECT_EQ(plan_gemm_lanes(GemmTile::Auto, {1, 4, 207, bytes}).gemm2_splits, 1) << "shape not given";
  for (int T : {32, 64}) {  // e8 h352 i2368 k1
    const GemmLanes l = plan_gemm_lanes(GemmTile::Auto, {T, 1, 8, kBigExpert, false, false, 352, 2368, 132});
    EXPECT_GT(l.wide_from, 0) << T;
    EXPECT_EQ(l.gemm2_splits, 1) << T;
    EXPECT_EQ(plan_gemm_lanes(GemmTile::Decode, {T, 1, 8, kBigExpert, false, false, 352, 2368, 132}).gemm2_splits, 4)
        << "the same forced onto Decode, one lane: " << T;
  }
}

// A random layer and forward for the workspace-bound tests below: E up to 512, k up to 8, H a
// multiple of 32 up to 8192, I a multiple of inter_step (up to inter_steps of them), the layer's
// max_tokens up to 4096 and T, every odd trial at 1..small_tokens tokens (where the splits happen).
namespace {
struct LayerDraw {
  int E, k, H, I, max_tokens, T;
};
LayerDraw draw_layer(std::mt19937& rng, int trial, int inter_step, int inter_steps, int small_tokens) {
  LayerDraw d{};
  d.E = 1 + static_cast<int>(rng() % 512);
  d.k = 1 + static_cast<int>(rng() % std::min(d.E, 8));
  d.H = 32 * (1 + static_cast<int>(rng() % 256));
  d.I = inter_step * (1 + static_cast<int>(rng() % inter_steps));
  d.max_tokens = 1 + static_cast<int>(rng() % 4096);
  d.T = 1 + static_cast<int>(rng() % (trial % 2 ? std::min(small_tokens, d.max_tokens) : d.max_tokens));
  return d;
}
}  // namespace

// The partial rows GEMM2's splits write fit the workspace for every shape, token count and tile:
// pairs x splits <= max(the layer's most pairs, kGemm2SplitMaxPairs) (WorkspaceLayout::partial).
TEST(GemmPlan, Gemm2SplitRowsFitTheWorkspace) {
  std::mt19937 rng(12);
  int split_cases = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const auto [E, k, H, I, max_tokens, T] = draw_layer(rng, trial, 32, 256, 64);
    for (GemmTile tile : {GemmTile::Auto, GemmTile::Tiny, GemmTile::Decode}) {
      const GemmLanes l = plan_gemm_lanes(tile, {T, k, E, kBigExpert, false, false, H, I, 132});
      split_cases += l.gemm2_splits > 1;
      ASSERT_TRUE(l.gemm2_splits == 1 || l.gemm2_splits == 2 || l.gemm2_splits == 4 || l.gemm2_splits == 8) << l.gemm2_splits;
      ASSERT_LE(std::int64_t{l.gemm2_splits} * T * k, std::max<std::int64_t>(std::int64_t{max_tokens} * k, kGemm2SplitMaxPairs));
      if (l.gemm2_splits > 1) {
        ASSERT_EQ(l.wide_from, 0);
      }
    }
  }
  EXPECT_GT(split_cases, 500) << "the draws must reach the split";
}

// The workspace's bound on the split sums holds for every shape, token count and tile: splits x
// pairs x 2I <= gemm1_split_partial_floats(the layer's most pairs, I).
TEST(GemmPlan, Gemm1SplitSumsFitTheirBound) {
  std::mt19937 rng(11);
  int split_cases = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const auto [E, k, H, I, max_tokens, T] = draw_layer(rng, trial, 16, 512, 4);  // odd trials at 1-4 tokens: the split's
    for (GemmTile tile : {GemmTile::Auto, GemmTile::Tiny, GemmTile::Decode}) {
      const GemmLanes l = plan_gemm_lanes(tile, {T, k, E, kBigExpert, false, false, H, I});
      const std::int64_t need = std::int64_t{l.gemm1_splits} * T * k * 2 * I;
      split_cases += l.gemm1_splits > 1;
      if (l.gemm1_splits > 1) {
        ASSERT_LE(need, gemm1_split_partial_floats(max_tokens * k, I)) << E << " " << k << " " << H << " " << I << " T=" << T;
      }
    }
  }
  EXPECT_GT(split_cases, 100) << "the draw reaches the split";
}

// Direct blocks (gemm/direct_blocks.hpp, what the GEMM kernels run at one and two tokens without the
// align kernel): for drawn ids with shared experts, masks, ids past E and repeats, the running blocks'
// slots hold every routed pair of an expert exactly once, each block one expert's pairs in pair order,
// at most kTokens of them, its own pair first; one token runs a block per valid pair.
TEST(GemmPlan, DirectBlocksPartitionTheRoutedPairs) {
  constexpr int kTokens = GemmTiny::kTokens;
  std::mt19937 rng(23);
  int shared = 0, split_groups = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    const int E = 1 + static_cast<int>(rng() % 12), k = 1 + static_cast<int>(rng() % 8);
    const int T = 1 + static_cast<int>(rng() % kDirectMaxTokens), pairs = T * k;
    ASSERT_LE(pairs, kDirectMaxPairs);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(pairs));
    for (auto& id : ids) {
      const unsigned r = rng() % 10;
      id = r == 0 ? -1 : r == 1 ? E + static_cast<int>(rng() % 3) : static_cast<int>(rng() % E);
    }
    if (trial % 7 == 0) std::fill(ids.begin(), ids.end(), static_cast<std::int32_t>(rng() % E));  // one expert in every slot
    const bool grouped = T == 2;
    std::vector<int> held(static_cast<std::size_t>(pairs), 0);
    for (int b = 0; b < pairs; ++b) {
      if (!gemm::direct_block_runs<kTokens>(ids.data(), grouped, E, b)) continue;
      int prev = -1, count = 0;
      for (int s = 0; s < kTokens; ++s) {
        const int q = gemm::direct_slot(ids.data(), grouped, pairs, b, s);
        if (q < 0) {
          for (int s2 = s + 1; s2 < kTokens; ++s2) ASSERT_EQ(gemm::direct_slot(ids.data(), grouped, pairs, b, s2), -1) << "padding last";
          break;
        }
        ASSERT_EQ(ids[static_cast<std::size_t>(q)], ids[static_cast<std::size_t>(b)]) << "one expert per block";
        ASSERT_GT(q, prev) << "pair order";
        if (s == 0) {
          ASSERT_EQ(q, b) << "the block's own pair first";
        }
        prev = q;
        ++count;
        ++held[static_cast<std::size_t>(q)];
      }
      shared += count > 1 && !std::all_of(ids.begin(), ids.end(), [&](std::int32_t id) { return id == ids[0]; });
      split_groups += count == kTokens && pairs > kTokens;
      if (!grouped) {
        ASSERT_EQ(count, 1) << "one token: a block per pair";
      }
    }
    for (int q = 0; q < pairs; ++q) {
      const int id = ids[static_cast<std::size_t>(q)];
      ASSERT_EQ(held[static_cast<std::size_t>(q)], id >= 0 && id < E ? 1 : 0) << "pair " << q << " (id " << id << "), trial " << trial;
    }
  }
  EXPECT_GT(shared, 100) << "the draw reaches experts shared by two tokens";
  EXPECT_GT(split_groups, 10) << "and an expert with more pairs than a block holds";
}
