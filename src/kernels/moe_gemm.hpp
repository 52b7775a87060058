// The grouped E2M1 x 16-bit GEMMs of the MoE forward: the tile configurations, the weight formats,
// the plan that picks them (gemm/plan.cpp, CPU-tested) and the launch API. The kernel is composed in
// kernels/gemm/ (kernel.cuh: configuration x weight format x stage); every instantiation is listed
// in gemm/instances.cuh.
#pragma once

#include <cstdint>
#include <string>

#include "mxmoe/config.hpp"
#include "kernels/tile_layout.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace mxmoe::kernels {

// One CTA computes kTilesPerWarp * kWarps / kKSlices weight tiles (16 rows each) for a block of
// kTokens routed (token, slot) pairs of one expert, over the whole K, streaming kChunksPerStage
// 64-wide K chunks per pipeline stage through kStages shared-memory buffers; kKSlices (1 where not
// said) groups of warps share the tiles and split each stage's chunks (gemm/geometry.hpp).
struct GemmTiny {  // one or two tokens in all: narrow CTAs, so that the few experts hit spread over
                   // every SM; two K slices, so four warps per CTA for the shared memory of two
  static constexpr int kTokens = 8, kWarps = 4, kKSlices = 2, kTilesPerWarp = 1, kChunksPerStage = 4, kStages = 4;
  static constexpr int kKLoopUnroll = 4;  // (geometry.hpp: KLoopUnrollOf)
  static constexpr bool kSplitGateUp = true;  // GEMM1 may split K too (gemm1_k_splits)
};
struct GemmDecode {  // a few tokens per expert: all weight bytes, little reuse
  // Three stages (38.8 KB) let five CTAs share an SM where four stages let four: the decode loop
  // waits mostly on fixed-latency dependencies (ncu, bench/results/20261201-0347-H200-diagnose:
  // "wait" the first stall reason, memory last), which more resident warps hide.
  static constexpr int kTokens = 8, kWarps = 4, kTilesPerWarp = 1, kChunksPerStage = 4, kStages = 3;
  static constexpr int kKLoopUnroll = 2;  // (geometry.hpp: KLoopUnrollOf)
  static constexpr int kMinCtasPerSm = 1;  // (geometry.hpp: MinCtasPerSmOf)
};
struct GemmSmall {
  static constexpr int kTokens = 16, kWarps = 4, kTilesPerWarp = 2, kChunksPerStage = 4, kStages = 4;
};
struct GemmMedium {
  static constexpr int kTokens = 32, kWarps = 4, kTilesPerWarp = 2, kChunksPerStage = 2, kStages = 4;
};
struct GemmPrefill {  // many tokens per expert: reuse each dequantised fragment across 64 tokens
  static constexpr int kTokens = 64, kWarps = 4, kTilesPerWarp = 2, kChunksPerStage = 1, kStages = 3;
};
// The compute-bound path (sm_90a warpgroup MMA, gemm/wgmma_kernel.cuh): three consumer warpgroups
// (192 weight rows) and a producer warpgroup; each consumer warpgroup runs one m64nNk16 per k16 step
// over up to 128 routed pairs (N = 64 or 128 by the block's live pairs), so every
// dequantised fragment serves up to 128 tokens. Measured on an H200
// (bench/results/20261130-1230-H200-wgmma-crossover): three warpgroups against two, 6-15% faster
// from 2048 tokens up (the warps are latency-bound: a third per scheduler hides more); blocks of 256
// at N = 256, 3-7% faster at 16384 tokens but 5-15% slower at 4096, where an expert's one block of
// 129..256 pairs made CTAs twice as long.
// A CTA's main loop is instantiated for two N: kNarrowN for blocks of at most kNarrowN live pairs,
// kTokens for the others.
struct GemmWgmma {
  static constexpr int kTokens = 128, kWarps = 12, kTilesPerWarp = 1, kChunksPerStage = 2, kStages = 4;
  static constexpr int kNarrowN = 64;
  static constexpr bool kWgmma = true;
};
// The same kernel for experts holding a few tens of pairs, blocks of 64 at N = 32 or 64: at 24
// pairs per expert GemmWgmma ran every block at N = 64 and Medium's mma.sync matched it (dsv4-flash
// 1024 tokens, 1806 us against 1813), both 0.86-0.89x Humming.
struct GemmWgmmaNarrow {
  static constexpr int kTokens = 64, kWarps = 12, kTilesPerWarp = 1, kChunksPerStage = 2, kStages = 4;
  static constexpr int kNarrowN = 32;
  static constexpr bool kWgmma = true;
};
// Blocks of 32 at N = 16 or 32, for experts holding a few to a few tens of pairs, where Decode and
// Small stream at 53-62% of the read floor and GemmWgmmaNarrow's N = 32 MMAs take about as long per
// stage as the stage's weight bytes (gpt-oss-120b 256 tokens: Small 702 us, wgmma-narrow 705,
// wgmma-small 653, Humming 688).
struct GemmWgmmaSmall {
  static constexpr int kTokens = 32, kWarps = 12, kTilesPerWarp = 1, kChunksPerStage = 2, kStages = 4;
  static constexpr int kNarrowN = 16;
  static constexpr bool kWgmma = true;
};

// The weight formats the kernels run (kernels/gemm/weight_formats.cuh):
//   Mxfp4         E8M0 scale bytes 0..128, bf16 (every real MXFP4 checkpoint seen: scales <= 2)
//   Mxfp4Shifted  bytes above 128 in a layer each of whose weight rows spans at most 128 bytes: the
//                 prepared bytes lowered by the row's shift d (prepare/scale_shift.hpp), Mxfp4's one
//                 multiply, and the epilogue multiplies by 2^d (MoeGemmParams::row_factor)
//   Mxfp4Wide     every E8M0 byte 0..254, bf16: one more exact multiply per register; only a layer
//                 with a row that holds a byte above 128 and spans more than 128 bytes runs it
//   Nvfp4Bf16     UE4M3 per 16 + global scales, bf16 activations
//   Nvfp4F16      the same with fp16 activations
//   Mxfp4E4m3     W4A8 (ActivationPrecision::Fp8PerToken): MXFP4 weights folded to e4m3 with a
//                 per-row 2^base (prepare/w4a8_fold.hpp), e4m3 activations with a scale per row; the
//                 wgmma kernel only
enum class GemmFormat { Mxfp4, Mxfp4Shifted, Mxfp4Wide, Nvfp4Bf16, Nvfp4F16, Mxfp4E4m3 };
const char* gemm_format_name(GemmFormat format);

// What the MXFP4 format choice reads of a layer's E8M0 scales, computed in one pass by
// prepare::e8m0_shifts, row by row (a row: one expert's weight row of w13 or w2, all its K groups).
struct E8m0ScaleSummary {
  int max_byte = 0;  // the layer's largest byte, 0..254
  // The largest span (largest byte - smallest byte) of the rows that hold a byte above 128;
  // 0 when none does. kUnknownScaleSpan: not known (scales prepared without a shift: the C ABI's
  // weights without factors), so bytes above 128 can only run Mxfp4Wide.
  int max_shifted_span = 0;
};
constexpr int kUnknownScaleSpan = 255;
// The format for a layer: `group` 32 or 16, fp16 activations (NVFP4 only), and its E8M0 scales'
// summary (MXFP4 only): Mxfp4 when every byte is at most 128; Mxfp4Shifted when some byte is above
// 128 and every row holding one spans at most 128 bytes; Mxfp4Wide otherwise. Throws
// InvalidArgument for a combination no kernel runs.
// With FP8 activations (W4A8) the format is Mxfp4E4m3 whatever the scales (the fold takes every
// byte); it needs MXFP4 weights and bf16 activations (Unsupported / DType otherwise).
GemmFormat choose_gemm_format(int group, bool f16_activations, const E8m0ScaleSummary& scales = {},
                              ActivationPrecision precision = ActivationPrecision::Bf16);

// The configurations by their public names (GemmTile in mxmoe/config.hpp: Tiny = GemmTiny, ...).
// Auto is not a configuration: the functions below refuse it; choose_gemm resolves it.
int gemm_tokens_per_block(GemmTile tile);
// CTAs along N for a matrix of `rows` rows.
int gemm_ctas_per_block(GemmTile tile, int rows);
// K splits of GEMM2 for the tiniest batches, where too few CTAs would leave SMs idle
// (gemm2_k_splits' floor on Tiny).
constexpr int kTinyGemm2Splits = 2;
// Picks the configuration from the average routed pairs per expert: a block should hold most
// experts' pairs, since a second block re-reads its weights, but wider blocks cost more per byte.
// batch_invariant (MoeLayerOptions::batch_invariant): every choice gives a token's output the same
// bits whatever batch it rides in: the mma.sync configurations only (they all sum K in the same
// order, chunk by chunk, k16 step by step, and an MMA column depends only on its own token), and no
// K split (gemm2_k_splits). The wgmma path is likely alike: in the default mode on the H200,
// sub-batches on mma.sync matched the same tokens in a batch on wgmma bit for bit (10 of 12; the 2
// others were the K split), but the mode with wgmma allowed has not run yet, so it stays excluded.
// bf16: GemmDecode up to kDecodeMaxPairs pairs per expert, then the wgmma configurations.
// fp8_activations (W4A8): the wgmma configurations from above kFp8WgmmaAbovePairs pairs per expert.
// The wgmma ladder: GemmWgmmaSmall up to kWgmmaSmallMaxPairs (bf16) or kFp8WgmmaSmallMaxPairs (W4A8;
// FP8's cheaper MMAs let the wider blocks lead sooner) pairs per expert, GemmWgmmaNarrow up to
// kWgmmaNarrowMaxPairs, GemmWgmma above.
constexpr double kDecodeMaxPairs = 6.5;
constexpr double kFp8WgmmaAbovePairs = 0.2;
constexpr double kWgmmaSmallMaxPairs = 24.0;
constexpr double kFp8WgmmaSmallMaxPairs = 16.0;
constexpr double kWgmmaNarrowMaxPairs = 40.0;
GemmTile choose_gemm(int num_tokens, int top_k, int num_experts, bool batch_invariant = false, bool fp8_activations = false);
// The forward's two lanes. Blocks are sized from the average pairs per expert, but routing is
// rarely uniform: an expert holding more pairs than one block of the chosen configuration would
// re-read its weights once per block. So the align kernel sends every expert with at least
// `wide_from` pairs (counted on the GPU, per forward) to the wide lane, which runs the wgmma
// configuration in blocks of up to 128 pairs with N fitted per block; the others run `narrow`.
// Measured on an H200 with skewed routing (bench/results/20261130-1505-H200-lanes-probe): every
// expert on wgmma ran 256 and 1024 tokens 1.4-1.7x faster than blocks sized from the average, while
// wgmma streams few pairs at ~44% of the read floor against mma.sync's ~70%: hence per expert.
struct GemmLanes {
  GemmTile narrow = GemmTile::Auto;
  // One or two tokens: blocks read straight from the topk ids, a block per routed pair, so the
  // forward launches no alignment kernel. One token's experts are distinct, so each pair is a block
  // of its own; two tokens may share experts (direct_groups): the block of an expert's first pair
  // runs its pairs, found by a scan of the ids at each CTA's start.
  bool direct = false;
  bool direct_groups = false;
  int wide_from = 0;  // 0: no wide lane (every expert runs `narrow`)
  int gemm1_splits = 1;  // GEMM1's K splits (gemm1_k_splits; only without a wide lane)
  int gemm2_splits = 1;  // GEMM2's K splits (gemm2_k_splits; only without a wide lane)
  GemmTile wide = GemmTile::Wgmma;  // the wide lane's configuration (wide_lane_for)
  int narrow_max_blocks = 0, wide_max_blocks = 0;  // grid rows: the most blocks each lane can get
};
// What the lane plan reads of a forward.
struct GemmProblem {
  int num_tokens = 0, top_k = 0, num_experts = 0;
  std::int64_t expert_weight_bytes = 0;  // one expert's prepared w13 + w2 weight bytes
  bool batch_invariant = false;
  bool fp8_activations = false;  // W4A8 (choose_gemm's own thresholds)
  int hidden = 0, inter = 0;     // H and I (GEMM1's K and half its rows); 0: not known (no K split)
  int sm_count = 0;              // the device's SMs; 0: not known (gemm2_k_splits' SM rule is off)
};
// Forced tiles (anything but Auto) run one lane. Auto: choose_gemm's configuration, plus the wide
// lane from kWideLaneMinTokens tokens on when that configuration is any but Tiny and GemmWgmma (so
// under GemmWgmmaNarrow the experts above 64 pairs run blocks of 128), the mode is not
// batch-invariant (the lane's sums are wgmma's), and an expert's weights reach
// kWideLaneMinExpertBytes, or (small experts) Decode is the narrow configuration of a forward of at
// least kWideLaneSmallExpertMinTokens tokens and kWideLaneSmallExpertMinPairs routed pairs and an
// expert's weights reach kWideLaneSmallExpertMinBytes; its threshold is one more pair than a narrow
// block holds.
// Small experts: at 16-64 tokens of uniform routing the lane's wgmma blocks and launches cost more
// than the re-reads they save (e36 h480 i576 k3 at 64 tokens 46.4 us with the lane, 26.3 without,
// bench/results/20261130-1800-H200-fused-combine-lane-size-ab). From 256 tokens, routing that piles
// hundreds of pairs on a few hot experts made Decode re-read each hot expert once per block of 8
// pairs: with --skew 1 auto ran as slowly as Decode forced, up to 1.75x wgmma-narrow forced (e318
// h3712 i320 k2, 1024 tokens: 219.7 us against 125.9; bench/results/20261202-1838-H200-skew-forced-tiles).
// The lane for every small expert from 256 tokens (bench/results/20261202-1847-H200-skew-small-
// experts-ab, 12 random shapes) took that row to 0.60-0.64x and e434 h3392 i384 k6 at 256 tokens to
// 0.71-0.76x, but lost 1.12-1.50x where the narrow configuration was already wgmma (blocks of 32-64
// pairs) or the experts were below 1 MB (e36 h480 i576, e245 h384 i1184, e279 h736 i512: a few hot
// experts' re-reads stay in the 50 MB L2), and uniform routing paid 1-15%. Hence Decode narrow and
// experts of 1 MB up; checked on 16 more shapes (seed 2, bench/results/20261202-1855-H200-skew-
// small-experts-check), where that rule still lost 1.16-1.30x on layers with top-1 routing at 256
// tokens (256 pairs: hot experts hold too few pairs to pay for the lane), hence 768 pairs up too.
// Over both sets the rows it opens the lane on run 0.64-0.88x with --skew 1 and 0.99-1.07x uniform.
// One token on Tiny (or Decode) runs direct; two (kDirectMaxTokens) do up to kDirectMaxPairs
// routed pairs when GEMM1 has at most kDirectGroupMaxCtas CTAs (H200: 2-6 us faster at two tokens on
// small layers, bench/results/20261202-0123-H200-direct-two-groups). Above it, layers of 34-62 MB
// experts whose GEMM1 runs several waves were 1-4% slower direct, also once the id scans read a
// shared-memory copy (bench/results/20261202-1344-H200-direct-smem-ab), so not for the scans' cost.
constexpr int kWideLaneMinTokens = 32;
constexpr int kDirectMaxTokens = 2;
constexpr int kDirectMaxPairs = 16;  // and at most this many routed pairs (gemm/direct_blocks.hpp)
constexpr std::int64_t kDirectGroupMaxCtas = 2048;
constexpr std::int64_t kWideLaneMinExpertBytes = std::int64_t{4} << 20;
constexpr int kWideLaneSmallExpertMinTokens = 256;
constexpr int kWideLaneSmallExpertMinPairs = 768;
constexpr std::int64_t kWideLaneSmallExpertMinBytes = std::int64_t{1} << 20;
GemmLanes plan_gemm_lanes(GemmTile tile, const GemmProblem& problem);
// The most blocks of `block_tokens` slots a lane can need for `pairs` routed pairs when each of its
// experts holds at least `min_pairs` and fewer than `below_pairs` (0: no upper limit) pairs:
// sum_e ceil(c_e / B) <= floor(pairs / B) + (lane experts <= min(E, pairs / min_pairs)), and each
// expert below `below_pairs` needs at most ceil((below_pairs - 1) / B) blocks.
int max_lane_blocks(int pairs, int num_experts, int block_tokens, int min_pairs = 1, int below_pairs = 0);
// A readable name of a plan: "medium", or "decode + wgmma-narrow from 9 pairs".
std::string gemm_lanes_name(const GemmLanes& lanes);
// The wide lane's configuration under a narrow one (blocks larger than the narrow one's).
GemmTile wide_lane_for(GemmTile narrow);

// GEMM2's K splits. GEMM2 writes fp32 partial rows that the combine sums anyway, so a split costs
// no kernel of its own: only the combine's extra loads and workspace (the splits' copies of the
// partial rows). Two rules, the larger count wins, on the mma.sync decode configurations Tiny and
// Decode (their RouterWeightedPartial stage splits K by blockIdx.z):
//  - Tiny with fewer CTAs than three per SM (sm_count known): kTinyGemm2Splits;
//  - GEMM1's latency model (gemm1_k_splits, below) with GEMM2's K = I: a layer with a small hidden
//    size and a long intermediate gives GEMM2 few CTAs, each streaming all of K as a chain of memory
//    latencies (e48 h352 i2368 k6: 6 CTAs per expert on Decode, 74 chunks each). Up to
//    kMaxGemm2Splits where it saves at least kGemm2SplitMinSavedLatencies, and only while pairs x
//    splits <= kGemm2SplitMaxPairs (the workspace's bound, WorkspaceLayout::partial).
// Always 1 when batch_invariant (a split changes the summation order of one token's dot products
// with the batch size) and for unknown shapes (inter = 0). Measured on the H200 over the 20 random
// shapes of seed 1 (bench/results/20261202-1706-H200-gemm2-splits-ab): 0.84-0.96x on the rows it
// splits at one and four tokens, the median level; 0.5 latency split a little more than 1.0, no
// worse anywhere.
constexpr int kMaxGemm2Splits = 8;
constexpr int kGemm2SplitMaxPairs = 256;
constexpr double kGemm2SplitMinSavedLatencies = 0.5;
int gemm2_k_splits(GemmTile tile, int hidden, int inter, int pairs, int max_blocks, int sm_count, bool batch_invariant);

// GEMM1's K splits. GEMM1's epilogue needs a row's whole sum (the activation is not linear), so it
// used to run K whole; but a tiny batch on a layer with a small intermediate gives GEMM1 few CTAs,
// each streaming all of K as a chain of memory latencies: e318 h3712 i320 k2 at one token ran GEMM1
// on 40 CTAs for 18.5 us, three times the whole layer's read floor (ncu,
// bench/results/20261201-0552-H200-shapes-tiles). A configuration with kSplitGateUp (Tiny) may split
// K in two, four or eight (kMaxGemm1Splits) when its CTAs number fewer than kGemm1SplitBelowCtas (a
// constant, so that the workspace bound below needs no device) and every split keeps at least one
// full stage of chunks. Each split writes its fp32 (gate, up) sums to the workspace (the
// GateUpPartial stage); kernels/gate_up_reduce adds them in split order, so the result stays
// deterministic, and applies the activation. That reduce is one more kernel, ~2.5 us on the H200, so
// the split must save more than it costs. The plan counts GEMM1's time in memory latencies: K's
// chunks over the chunks a CTA keeps in flight (its stages), or the GEMM's bytes over what the card
// streams in one latency (kKSplitLatencyBytes), whichever is longer; it takes the split count
// that saves the most, at least kGemm1SplitMinSavedLatencies, each doubling at least
// kKSplitMinStepLatencies more. Fitted on the H200 to the 20-shape sweep's one- and two-token
// rows (bench/results/20261202-0050-H200-gemm1-split-ab): splitting whenever CTAs were few gained
// 26% and 13% on e318 h3712 i320 k2 (58 chunks on 40 and 80 CTAs: ~3 latencies saved) and lost
// 9-15% where it saved under two (K of 480 or 736; 236 CTAs that already stream). 1 for every other
// configuration, for unknown shapes (k = 0) and in the batch-invariant mode (a split changes the
// summation order with the batch size). `rows` = 2I (w13's prepared rows), `k` = H.
constexpr int kMaxGemm1Splits = 8;
constexpr int kGemm1SplitBelowCtas = 256;
// The latency model's constants, which GEMM2's split (gemm2_k_splits) shares:
constexpr double kKSplitLatencyBytes = 6.0 * 1024 * 1024;  // ~4.3 TB/s x ~1.5 us, loaded
constexpr double kKSplitBytesPerWeight = 0.5 + 1.0 / 32;   // E2M1 and its E8M0 scale
constexpr double kKSplitMinStepLatencies = 0.25;
constexpr double kGemm1SplitMinSavedLatencies = 2.25;  // the reduce costs ~1.7
int gemm1_k_splits(GemmTile tile, int rows, int k, int max_blocks, bool batch_invariant);
// The fp32 values the split GEMM1's sums may need for up to `pairs` routed pairs of a layer with
// intermediate `inter`, for any token count and tile: splits x pairs x 2I, where a split only
// happens on fewer than kGemm1SplitBelowCtas Tiny CTAs of 32 rows x 8 pair slots each, so
// pairs x 2I stays below 256 x kGemm1SplitBelowCtas.
std::int64_t gemm1_split_partial_floats(int pairs, int inter);

struct MoeGemmParams {
  // Prepared weights of all experts (tile layout), expert e at e * expert_*_stride bytes.
  const std::uint8_t* weights;
  const std::uint8_t* scales;
  std::int64_t expert_weight_stride, expert_scale_stride;
  tiling::TiledShape shape;       // prepared rows (N) and K of one expert
  int num_experts;

  // Activations: row r = pair / act_row_divisor of a [*, K] bf16 matrix (W4A16), or of an e4m3
  // one whose row r is worth act_e4m3[r] x act_scale[r] (W4A8, the Mxfp4E4m3 format).
  const std::uint16_t* act;
  int act_row_divisor;
  const std::uint8_t* act_e4m3;
  const float* act_scale;

  // Alignment output: kTokens pair ids (or -1) per block, the block's expert, the block count.
  const std::int32_t* sorted_pairs;
  const std::int32_t* block_expert;
  const std::int32_t* num_blocks;
  // Direct blocks (GemmLanes::direct; the mma.sync kernel only): when not null, no alignment ran and
  // block b stands for routed pair b, its expert direct_ids[b] (the forward's topk ids; an id outside
  // 0..E-1 makes the block exit), direct_blocks blocks in all; the block of an expert's first pair
  // runs its expert's pairs (up to kTokens; gemm/direct_blocks.hpp), the others exit.
  const std::int32_t* direct_ids;
  int direct_blocks;
  bool direct_groups;  // GemmLanes::direct_groups: group an expert's pairs (else a block per pair)

  const float* bias;  // canonical order: [E, 2I] for w13, [E, H] for w2; may be null
  // NVFP4's fp32 global scales (formats with kGlobalScale), [E, 2] (gate, up) for w13 and [E] for
  // w2; null for the others.
  const float* global_scale;
  // Mxfp4Shifted's fp32 per-row factors 2^d (formats with kRowFactor), canonical row order: [E, 2I]
  // (gate rows, then up rows) for w13, [E, H] for w2; null for the others.
  const float* row_factor;

  // GEMM1 (w13): activation of gate/up, written in the operand type (bf16/fp16) to inter_out[pair, I].
  std::uint16_t* inter_out;
  ActivationKind act_kind;
  float act_limit, act_alpha;

  // GEMM2 (w2): pair_weight * (y + bias), written fp32 to partial_out[pair, H].
  // GEMM1 with its K split (k_splits > 1, gemm1_k_splits): the (gate, up) sums, factors applied and
  // biases on split 0, written fp32 to partial_out[pair, 2I] (gate at f, up at I + f) per split.
  const float* pair_weights;
  float* partial_out;
  std::int64_t partial_split_stride;  // floats between the outputs of consecutive K splits
  int k_splits;                       // 1 = no split
  // The wgmma kernel's grid: persistent CTAs, each taking (tile group, block) items in turn (the
  // SM count: one CTA fits an SM); 0 = one CTA per item.
  int persistent_ctas;
};

// Grid: one CTA per (row tile group, token block), blocks past *num_blocks exiting at once; or
// for the wgmma configuration p.persistent_ctas CTAs that loop over them.
void launch_moe_gemm1(GemmTile tile, GemmFormat format, const MoeGemmParams& p, int max_blocks, cudaStream_t stream);
void launch_moe_gemm2(GemmTile tile, GemmFormat format, const MoeGemmParams& p, int max_blocks, cudaStream_t stream);
// Raises the dynamic shared-memory limit of every instantiation (once per process and device; cheap
// to call again).
void configure_moe_gemm_kernels();

}  // namespace mxmoe::kernels
