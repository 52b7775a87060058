// The GEMM plan: which configuration, format and split a problem runs with. Plain C++ (no CUDA),
// so the CPU tests check every choice.
#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/gemm/configs.hpp"
#include "kernels/gemm/geometry.hpp"
#include "kernels/dequant.hpp"
#include "kernels/moe_gemm.hpp"

namespace mxmoe::kernels {

int gemm_ctas_per_block(GemmTile tile, int rows) {
  return gemm::with_config(tile, [rows](auto cfg) {
    constexpr int kTilesPerCta = gemm::CtaTiles<decltype(cfg)>::kTilesPerCta;
    return (rows / tiling::kTileRows + kTilesPerCta - 1) / kTilesPerCta;
  });
}

int gemm_tokens_per_block(GemmTile tile) {
  return gemm::with_config(tile, [](auto cfg) { return decltype(cfg)::kTokens; });
}

GemmTile choose_gemm(int num_tokens, int top_k, int num_experts, bool batch_invariant, bool fp8_activations) {
  const double pairs_per_expert = static_cast<double>(num_tokens) * top_k / num_experts;
  // batch_invariant: every configuration it picks runs K in one order, one warp per row tile from
  // chunk 0 up; Tiny's K slices add two halves (moe_gemm.hpp), so one and two tokens take Decode.
  if (num_tokens <= 2) return batch_invariant ? GemmTile::Decode : GemmTile::Tiny;
  // The warpgroup-MMA ladder: blocks of 32 at N = 16 or 32, then of 64 at N = 32 or 64 up to
  // kWgmmaNarrowMaxPairs, then of 128 at N = 64 or 128. Measured on an H200
  // (bench/results/20261201-0320-H200-next3 and 20261201-0329-H200-plan-small, auto plans side by
  // side and every configuration forced):
  //  - bf16 gpt-oss-120b 256 tokens (8 pairs) 663-668 us on wgmma-small against Small's 712;
  //    384 (12 pairs) 684 against 729; dsv4-flash 384 (9 pairs) 1302 against 1423, 512 (12 pairs)
  //    1352 against wgmma-narrow's 1448; at 24 pairs (dsv4-flash 1024, forced) 1480 against 1545,
  //    at 32 (gpt-oss-120b 1024, forced) 996 against 824: the bf16 crossover lies between.
  //  - W4A8: a tie at 12 and 16 pairs, wgmma-narrow ahead at 24 (1276 against 1296 us).
  //  - wgmma-narrow against wgmma (bench/results/20261201-0110-H200-wgmma-narrow): a tie at 48
  //    pairs, wgmma ahead at 64.
  const double small_max = fp8_activations ? kFp8WgmmaSmallMaxPairs : kWgmmaSmallMaxPairs;
  const GemmTile wgmma = pairs_per_expert <= small_max              ? GemmTile::WgmmaSmall
                         : pairs_per_expert <= kWgmmaNarrowMaxPairs ? GemmTile::WgmmaNarrow
                                                                    : GemmTile::Wgmma;
  // W4A8: FP8 wgmma runs twice the bf16 rate, so it leads from far fewer pairs: dsv4-flash 16
  // tokens (0.375 pairs) 381 us on wgmma-small against Decode's 410, 32 tokens 610 against 665;
  // gpt-oss-120b 8 tokens (0.25 pairs) 167 against 172; dsv4-flash 8 tokens (0.19 pairs) a tie.
  if (fp8_activations && !batch_invariant && pairs_per_expert > kFp8WgmmaAbovePairs) return wgmma;
  if (pairs_per_expert <= kDecodeMaxPairs) return GemmTile::Decode;
  // batch_invariant keeps the mma.sync configurations (thresholds from scripts/tune-gemm on an H100).
  if (batch_invariant) return pairs_per_expert <= 12.0 ? GemmTile::Small : pairs_per_expert <= 28.0 ? GemmTile::Medium : GemmTile::Prefill;
  return wgmma;
}

int max_lane_blocks(int pairs, int num_experts, int block_tokens, int min_pairs, int below_pairs) {
  if (pairs <= 0) return 0;
  const int experts = std::min(num_experts, pairs / std::max(min_pairs, 1));
  int blocks = pairs / block_tokens + experts;
  if (below_pairs > 0) blocks = std::min(blocks, experts * ((below_pairs - 1 + block_tokens - 1) / block_tokens));
  return blocks;
}

GemmTile wide_lane_for(GemmTile narrow) {
  // Decode's overflow (experts above 8 pairs) holds a few to a few tens of pairs at the token
  // counts where Decode is chosen: blocks of 64 at N = 32 or 64 rather than 128 at N = 64, whose
  // MMAs on a 9..16-pair block do four to seven times the live work.
  return narrow == GemmTile::Decode ? GemmTile::WgmmaNarrow : GemmTile::Wgmma;
}

GemmLanes plan_gemm_lanes(GemmTile tile, const GemmProblem& pr) {
  GemmLanes l;
  const int pairs = pr.num_tokens * pr.top_k, num_tokens = pr.num_tokens, num_experts = pr.num_experts;
  l.narrow = tile == GemmTile::Auto ? choose_gemm(num_tokens, pr.top_k, num_experts, pr.batch_invariant, pr.fp8_activations) : tile;
  const int bt = gemm_tokens_per_block(l.narrow);
  const bool wide = tile == GemmTile::Auto && !pr.batch_invariant && num_tokens >= kWideLaneMinTokens &&
                    (pr.expert_weight_bytes >= kWideLaneMinExpertBytes ||
                     (l.narrow == GemmTile::Decode && num_tokens >= kWideLaneSmallExpertMinTokens &&
                      pairs >= kWideLaneSmallExpertMinPairs && pr.expert_weight_bytes >= kWideLaneSmallExpertMinBytes)) &&
                    l.narrow != GemmTile::Tiny && l.narrow != GemmTile::Wgmma;
  if (!wide) {
    // Direct blocks on the 8-token mma.sync configurations: Tiny, and Decode where batch_invariant
    // (or --gemm-tile) puts one or two tokens on it.
    const bool direct_tile = (l.narrow == GemmTile::Tiny || l.narrow == GemmTile::Decode) && pairs <= kDirectMaxPairs;
    l.direct_groups = direct_tile && num_tokens == kDirectMaxTokens && pr.inter > 0 &&
                      std::int64_t{gemm_ctas_per_block(l.narrow, 2 * pr.inter)} * pairs <= kDirectGroupMaxCtas;
    l.direct = (direct_tile && num_tokens == 1) || l.direct_groups;
    l.narrow_max_blocks = l.direct ? pairs : max_lane_blocks(pairs, num_experts, bt);
    l.gemm1_splits = gemm1_k_splits(l.narrow, 2 * pr.inter, pr.hidden, l.narrow_max_blocks, pr.batch_invariant);
    l.gemm2_splits = gemm2_k_splits(l.narrow, pr.hidden, pr.inter, pairs, l.narrow_max_blocks, pr.sm_count, pr.batch_invariant);
    return l;
  }
  l.wide_from = bt + 1;
  l.wide = wide_lane_for(l.narrow);
  l.narrow_max_blocks = max_lane_blocks(pairs, num_experts, bt, 1, l.wide_from);
  l.wide_max_blocks = max_lane_blocks(pairs, num_experts, gemm_tokens_per_block(l.wide), l.wide_from);
  return l;
}

std::string gemm_lanes_name(const GemmLanes& lanes) {
  std::string name = gemm_tile_name(lanes.narrow);
  if (lanes.direct) name += " (direct: no alignment)";
  if (lanes.wide_from > 0) name += std::string(" + ") + gemm_tile_name(lanes.wide) + " from " + std::to_string(lanes.wide_from) + " pairs";
  if (lanes.gemm1_splits > 1) name += ", w13 K in " + std::to_string(lanes.gemm1_splits) + " splits";
  if (lanes.gemm2_splits > 1) name += ", w2 K in " + std::to_string(lanes.gemm2_splits) + " splits";
  return name;
}

namespace {
// The K-split latency model both GEMMs' splits share (moe_gemm.hpp, above kGemm1SplitMinSavedLatencies),
// in memory latencies: a CTA keeps kStages x kChunksPerStage chunks in flight, so K alone takes
// chunks / that many round trips; the whole GEMM can not beat its bytes over what the card streams
// in one latency. Takes the split count up to max_splits that saves the most, at least min_saved,
// each doubling at least kKSplitMinStepLatencies more, every split keeping a full stage of chunks.
template <class Cfg>
int k_splits_by_latency(std::int64_t ctas, int k, int max_splits, double min_saved) {
  const int chunks = (k + tiling::kChunkK - 1) / tiling::kChunkK;
  constexpr double kInFlight = Cfg::kStages * Cfg::kChunksPerStage;
  constexpr int kRowsPerCta = gemm::CtaTiles<Cfg>::kRowsPerCta;
  const double stream = static_cast<double>(ctas) * kRowsPerCta * k * kKSplitBytesPerWeight / kKSplitLatencyBytes;
  const double whole = chunks / kInFlight;
  int best = 1;
  double best_saved = 0.0;
  for (int splits = 2; splits <= max_splits && chunks >= splits * Cfg::kChunksPerStage; splits *= 2) {
    const double saved = whole - std::max((chunks + splits - 1) / splits / kInFlight, stream);
    if (saved >= min_saved && saved >= best_saved + kKSplitMinStepLatencies) {
      best = splits;
      best_saved = saved;
    }
  }
  return best;
}
}  // namespace

int gemm2_k_splits(GemmTile tile, int hidden, int inter, int pairs, int max_blocks, int sm_count, bool batch_invariant) {
  if (batch_invariant || (tile != GemmTile::Tiny && tile != GemmTile::Decode) || max_blocks <= 0 || pairs <= 0) return 1;
  // The workspace holds kGemm2SplitMaxPairs partial rows (or the pairs' own, if more: WorkspaceLayout).
  int max_splits = 1;
  while (max_splits * 2 <= kMaxGemm2Splits && static_cast<std::int64_t>(pairs) * max_splits * 2 <= kGemm2SplitMaxPairs) max_splits *= 2;
  const std::int64_t ctas = static_cast<std::int64_t>(gemm_ctas_per_block(tile, hidden)) * max_blocks;
  int splits = tile == GemmTile::Tiny && sm_count > 0 && ctas < 3 * sm_count ? kTinyGemm2Splits : 1;
  if (inter > 0)
    splits = std::max(splits, gemm::with_config(tile, [&](auto cfg) {
                        return k_splits_by_latency<decltype(cfg)>(ctas, inter, max_splits, kGemm2SplitMinSavedLatencies);
                      }));
  return std::min(splits, max_splits);
}

int gemm1_k_splits(GemmTile tile, int rows, int k, int max_blocks, bool batch_invariant) {
  if (batch_invariant || max_blocks <= 0 || rows <= 0 || k <= 0) return 1;
  return gemm::with_config(tile, [&](auto cfg) {
    using Cfg = decltype(cfg);
    if constexpr (!gemm::SplitsGateUp<Cfg>::value) {
      return 1;
    } else {
      const std::int64_t ctas = static_cast<std::int64_t>(gemm_ctas_per_block(tile, rows)) * max_blocks;
      if (ctas >= kGemm1SplitBelowCtas) return 1;
      return k_splits_by_latency<Cfg>(ctas, k, kMaxGemm1Splits, kGemm1SplitMinSavedLatencies);
    }
  });
}

std::int64_t gemm1_split_partial_floats(int pairs, int inter) {
  // Only GemmTiny splits (static_assert below): a split GEMM1 has ctas = ceil(2I / rows per CTA) x
  // blocks < kGemm1SplitBelowCtas, and each block holds at most kTokens pairs (a direct block too),
  // so pairs x 2I <= kTokens x rows per CTA x ctas.
  static_assert(gemm::SplitsGateUp<GemmTiny>::value && !gemm::SplitsGateUp<GemmDecode>::value &&
                    !gemm::SplitsGateUp<GemmSmall>::value && !gemm::SplitsGateUp<GemmMedium>::value &&
                    !gemm::SplitsGateUp<GemmPrefill>::value,
                "the bound assumes only GemmTiny splits GEMM1");
  constexpr std::int64_t kRowsPerCta = gemm::CtaTiles<GemmTiny>::kRowsPerCta;
  constexpr std::int64_t kMaxValues = GemmTiny::kTokens * kRowsPerCta * kGemm1SplitBelowCtas;
  const std::int64_t values = static_cast<std::int64_t>(std::max(pairs, 0)) * 2 * std::max(inter, 0);
  return kMaxGemm1Splits * std::min(values, kMaxValues);
}

const char* gemm_format_name(GemmFormat format) {
  switch (format) {
    case GemmFormat::Mxfp4: return "mxfp4";
    case GemmFormat::Mxfp4Shifted: return "mxfp4-shifted";
    case GemmFormat::Mxfp4Wide: return "mxfp4-wide";
    case GemmFormat::Nvfp4Bf16: return "nvfp4-bf16";
    case GemmFormat::Nvfp4F16: return "nvfp4-f16";
    case GemmFormat::Mxfp4E4m3: return "mxfp4-e4m3";
  }
  return "?";
}

GemmFormat choose_gemm_format(int group, bool f16_activations, const E8m0ScaleSummary& scales, ActivationPrecision precision) {
  if (precision == ActivationPrecision::Fp8PerToken) {
    if (group != 32)
      fail(ErrorCode::Unsupported, "GEMM format: FP8 activations (W4A8) take MXFP4 weights (group 32, E8M0 scales), got group " +
                                       std::to_string(group) + (group == 16 ? " (NVFP4)" : ""));
    if (f16_activations) fail(ErrorCode::DType, "GEMM format: FP8 activations (W4A8) are quantised from bf16, got fp16");
    return GemmFormat::Mxfp4E4m3;
  }
  if (group == 16) return f16_activations ? GemmFormat::Nvfp4F16 : GemmFormat::Nvfp4Bf16;
  if (group != 32)
    fail(ErrorCode::InvalidArgument, "GEMM format: the group must be 32 (MXFP4) or 16 (NVFP4), got " + std::to_string(group));
  if (f16_activations)
    fail(ErrorCode::DType, "GEMM format: MXFP4 weights (group 32, E8M0 scales) need bf16 activations, got fp16");
  if (scales.max_byte < 0 || scales.max_byte > 254)
    fail(ErrorCode::InvalidArgument, "GEMM format: the largest E8M0 scale byte must be in 0..254, got " + std::to_string(scales.max_byte));
  if (scales.max_shifted_span < 0 || scales.max_shifted_span > kUnknownScaleSpan)
    fail(ErrorCode::InvalidArgument, "GEMM format: an E8M0 span must be in 0..255, got " + std::to_string(scales.max_shifted_span));
  if (scales.max_byte <= kMaxFastScaleByte) return GemmFormat::Mxfp4;
  // Scales above 2 are rare (none in the checkpoints we know). A weight row that spans at most 128
  // bytes fits 0..128 once lowered by d = max - 128 (its smallest byte is then >= d), and the
  // epilogue multiplies the row by 2^d: Mxfp4's one multiply, exactly. Only a row spanning more than
  // 128 bytes, a factor above 2^128 between two blocks of one row (pathological: no trained weights
  // look like that), needs the second multiply per register.
  return scales.max_shifted_span <= kMaxFastScaleByte ? GemmFormat::Mxfp4Shifted : GemmFormat::Mxfp4Wide;
}

}  // namespace mxmoe::kernels
