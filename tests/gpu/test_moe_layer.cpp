// MoeLayer on the GPU against the CPU oracle: fresh random data, outputs poisoned before each run.
// Tolerance: the GPU and the oracle dequantise exactly and accumulate in fp32; they differ by the
// summation order and by bf16 rounding flips of the intermediate and the output, so the relative
// Frobenius error sits near 1e-3; we require < 1e-2 (the peers reach 3e-3 to 5e-3). NaN fails.
// W4A8 (FP8 activations) against the oracle's FP8 mode: the same quantisation of the same values
// (hidden rows: identical; the intermediate: equal up to the bf16 flips above), but Hopper's FP8
// tensor cores do not accumulate in full fp32 (DeepSeek-V3's report, section 3.3.2: about 14 bits
// kept per addition), so over K = 2880..7168 the dot products drift by up to ~1e-2 relative: measured
// 0.6e-3 to 1.6e-2 on the shapes below (bench/results/20261130-1805-H200-w4a8). We require < 3e-2
// (kFp8Tolerance); a wrong table, layout or scale gives errors of order 1. The FP8 quantisation
// itself costs ~4.7e-2 against the W4A16 oracle (printed, not asserted).
#include <algorithm>
#include <cstring>
#include <functional>
#include <string>

#include <cuda_runtime.h>

#include "mxmoe/device_buffer.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/presets.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "kernels/moe_gemm.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::test;
using namespace mxmoe::verify;

namespace {

constexpr double kTolerance = 1e-2;
constexpr double kFp8Tolerance = 3e-2;
double tolerance_for(ActivationPrecision precision) {
  return precision == ActivationPrecision::Fp8PerToken ? kFp8Tolerance : kTolerance;
}

struct Case {
  std::string name;
  int H, I, E, k;
  ActivationConfig act;
  bool biases;
  float hidden_std;  // large enough that the clamps of the clamped activations engage
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

CanonicalMoeWeights weights_for(const Case& c, std::uint64_t seed) {
  SyntheticSpec spec;
  spec.num_experts = c.E;
  spec.hidden = c.H;
  spec.inter = c.I;
  spec.with_biases = c.biases;
  spec.seed = seed;
  return make_synthetic_weights(spec);
}

// One forward of `layer` on fresh device copies of the inputs, its output poisoned first (0xFF bytes
// are NaN, so an element the kernels forget to write fails the check), read back.
std::vector<std::uint16_t> forward_on_device(const MoeLayer& layer, const std::vector<std::uint16_t>& hidden, const TopK& topk) {
  const DeviceBuffer d_hidden = DeviceBuffer::from_host(hidden, "hidden"), d_ids = DeviceBuffer::from_host(topk.ids, "ids"),
                     d_w = DeviceBuffer::from_host(topk.weights, "weights");
  DeviceBuffer d_out(hidden.size() * 2, "out");
  d_out.fill(0xFF);
  layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_w.as<float>(), d_out.as(), topk.num_tokens, nullptr);
  check_cuda(cudaDeviceSynchronize(), "forward");
  return d_out.to_host<std::uint16_t>();
}

// The relative error of `out` against the oracle on up to `samples` tokens spread over the batch.
double sampled_error(const CanonicalMoeWeights& w, const Case& c, const std::vector<std::uint16_t>& hidden, const TopK& topk,
                     const std::vector<std::uint16_t>& out, int samples = 48,
                     ActivationPrecision precision = ActivationPrecision::Bf16) {
  const auto rows = spread_rows(topk.num_tokens, samples);
  const auto ref = reference::moe_forward(w, take_rows(hidden, c.H, rows).data(), static_cast<int>(rows.size()), take_rows(topk, rows),
                                          c.act, precision);
  return relative_error(take_rows(out, c.H, rows), ref);
}

// Runs forward for T tokens and checks up to 48 sampled tokens against the oracle.
void check_forward(const MoeLayer& layer, const CanonicalMoeWeights& w, const Case& c, int T, bool mask_half,
                   std::uint32_t seed, ActivationPrecision precision = ActivationPrecision::Bf16) {
  const auto hidden = random_hidden(T, c.H, seed, c.hidden_std);
  const TopK topk = random_topk(T, c.E, c.k, seed + 1, mask_half ? TopKMask::experts_from_id(c.E / 2) : TopKMask{});
  const std::vector<std::uint16_t> out = forward_on_device(layer, hidden, topk);
  const double err = sampled_error(w, c, hidden, topk, out, 48, precision);
  EXPECT_LT(err, tolerance_for(precision)) << c.name << " T=" << T << (mask_half ? " masked" : "");
  // Tokens whose every slot is masked must come out exactly zero, not stale.
  for (int t = 0; t < T; ++t) {
    bool all_masked = true;
    for (int s = 0; s < c.k; ++s) all_masked &= topk.ids[static_cast<std::size_t>(t) * c.k + s] < 0;
    if (!all_masked) continue;
    for (int h = 0; h < c.H; ++h) ASSERT_EQ(out[static_cast<std::size_t>(t) * c.H + h] & 0x7fff, 0) << "token " << t;
  }
  if (precision == ActivationPrecision::Fp8PerToken)  // what FP8 activations cost against the W4A16 oracle (information)
    std::printf("  %-22s T=%5d %-7s fp8: rel err %.2e vs the FP8 oracle, %.2e vs the W4A16 oracle\n", c.name.c_str(), T,
                mask_half ? "masked" : "", err, sampled_error(w, c, hidden, topk, out, 16));
  else
    std::printf("  %-22s T=%5d %-7s rel err %.2e\n", c.name.c_str(), T, mask_half ? "masked" : "", err);
}

class LayerShapes : public ::testing::TestWithParam<Case> {};

// One layer of the case, on a GEMM path (auto, or forced), checked at every token count given.
void sweep_token_counts(const Case& c, GemmTile tile, std::uint64_t weight_seed, std::uint32_t seed, std::initializer_list<int> counts,
                        std::initializer_list<int> masked_counts, ActivationPrecision precision = ActivationPrecision::Bf16) {
  const auto w = weights_for(c, weight_seed);
  MoeLayerOptions o;
  o.max_tokens = 4096;
  o.top_k = c.k;
  o.activation = c.act;
  o.gemm_tile = tile;
  o.activation_precision = precision;
  MoeLayer layer(w, o);
  if (precision == ActivationPrecision::Fp8PerToken) {
    EXPECT_STREQ(layer.gemm_format(), "mxfp4-e4m3");
    // The layer reports what its prepare re-quantised: every group of both tensors looked at.
    EXPECT_EQ(layer.w4a8_fold().w13.groups, static_cast<std::int64_t>(c.E) * 2 * c.I * c.H / 32);
    EXPECT_EQ(layer.w4a8_fold().w2.groups, static_cast<std::int64_t>(c.E) * c.H * c.I / 32);
  }
  for (int T : counts) check_forward(layer, w, c, T, false, seed += 7, precision);
  for (int T : masked_counts) check_forward(layer, w, c, T, true, seed += 7, precision);
}

TEST_P(LayerShapes, MatchesOracleAcrossTokenCounts) {
  MXMOE_REQUIRE_HOPPER();
  sweep_token_counts(GetParam(), GemmTile::Auto, 42, 100, {1, 3, 16, 64, 333, 1024, 4096}, {1, 16, 333});
}

// The compute-bound path (warpgroup MMA, 128 pairs per block) forced at every token count, from one
// token (a block almost all padding) to blocks full of one expert's pairs.
TEST_P(LayerShapes, WgmmaPathMatchesOracle) {
  MXMOE_REQUIRE_HOPPER();
  sweep_token_counts(GetParam(), GemmTile::Wgmma, 43, 900, {1, 3, 64, 333, 1024, 4096}, {16, 333, 2048});
}

// The narrow warpgroup-MMA configuration (blocks of 64 pairs, N = 32 or 64 by the block's live pairs)
// forced at every token count: blocks of a few pairs, remainders at N = 32, full blocks at N = 64.
TEST_P(LayerShapes, WgmmaNarrowPathMatchesOracle) {
  MXMOE_REQUIRE_HOPPER();
  sweep_token_counts(GetParam(), GemmTile::WgmmaNarrow, 46, 900, {1, 3, 64, 333, 1024}, {16, 333});
}

// The small warpgroup-MMA configuration (blocks of 32 pairs, N = 16 or 32) forced likewise.
TEST_P(LayerShapes, WgmmaSmallPathMatchesOracle) {
  MXMOE_REQUIRE_HOPPER();
  sweep_token_counts(GetParam(), GemmTile::WgmmaSmall, 47, 900, {1, 3, 64, 333, 1024}, {16, 333});
}

// W4A8 (issue 14): FP8 activations on FP8 warpgroup MMA against the oracle's FP8 mode, from one token
// (a block almost all padding) to 4096, with masks.
TEST_P(LayerShapes, W4a8MatchesTheFp8Oracle) {
  MXMOE_REQUIRE_HOPPER();
  sweep_token_counts(GetParam(), GemmTile::Auto, 44, 1300, {1, 3, 64, 333, 1024, 4096}, {16, 333}, ActivationPrecision::Fp8PerToken);
}

// W4A8 on every configuration forced (mma.sync m16n8k32 e4m3: tiny .. prefill; wgmma, wgmma-narrow),
// with masks.
TEST(Layer, W4a8RunsOnEveryConfiguration) {
  MXMOE_REQUIRE_HOPPER();
  const Case c{"w4a8-every-config", 1024, 384, 16, 4, ActivationConfig::clamped_silu_mul(10.0f), true, 4.0f};
  for (GemmTile tile :
       {GemmTile::Tiny, GemmTile::Decode, GemmTile::Small, GemmTile::Medium, GemmTile::Prefill, GemmTile::Wgmma, GemmTile::WgmmaNarrow,
        GemmTile::WgmmaSmall}) {
    SCOPED_TRACE(gemm_tile_name(tile));
    sweep_token_counts(c, tile, 45, 1500, {1, 2, 7, 100}, {33}, ActivationPrecision::Fp8PerToken);
  }
}

// A preset's H, I, top-k, activation and biases (include/mxmoe/presets.hpp) with fewer experts, so
// the oracle stays quick; `tp` > 1 takes one tensor-parallel rank's slice of I.
Case preset_case(const std::string& preset, int experts, float hidden_std, int tp = 1) {
  const ModelPreset& p = find_preset(preset);
  return {tp > 1 ? preset + "-tp" + std::to_string(tp) : preset, p.hidden, p.inter / tp, experts, p.top_k, p.activation,
          p.biases, hidden_std};
}

// E small also makes many tokens per expert, which exercises the prefill configuration.
INSTANTIATE_TEST_SUITE_P(
    Models, LayerShapes,
    ::testing::Values(preset_case("dsv4-flash", 16, 4.0f), preset_case("dsv3", 12, 1.0f), preset_case("gpt-oss-120b", 8, 4.0f),
                      preset_case("qwen3-30b", 32, 1.0f), preset_case("dsv4-flash", 32, 4.0f, 4),
                      preset_case("dsv4-flash", 32, 4.0f, 8),
                      Case{"gpt-oss-tp8-window", 2880, 384, 16, 4, ActivationConfig::gpt_oss(), true, 4.0f},
                      Case{"odd-k-tail", 2080, 96, 8, 2, ActivationConfig::silu_mul(), true, 1.0f}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

Case small_case() { return {"small", 512, 256, 16, 4, ActivationConfig::clamped_silu_mul(10.0f), true, 4.0f}; }

// The layer options of the small case, with a GEMM configuration (auto, or a path forced) and an
// activation precision.
MoeLayerOptions options_for(const Case& c, int max_tokens, GemmTile tile = GemmTile::Auto,
                            ActivationPrecision precision = ActivationPrecision::Bf16) {
  MoeLayerOptions o{max_tokens, c.k, c.act, 0};
  o.gemm_tile = tile;
  o.activation_precision = precision;
  return o;
}

// Captures one forward of T tokens in a CUDA graph and replays it three times with new inputs (the
// second with half the experts masked), each against the oracle.
void check_graph_replays(const MoeLayer& layer, const CanonicalMoeWeights& w, const Case& c, int T, ActivationPrecision precision) {
  DeviceBuffer d_hidden(static_cast<std::size_t>(T) * c.H * 2, "hidden"), d_out(static_cast<std::size_t>(T) * c.H * 2, "out");
  DeviceBuffer d_ids(static_cast<std::size_t>(T) * c.k * 4, "ids");
  DeviceBuffer d_w(static_cast<std::size_t>(T) * c.k * 4, "weights");
  cudaStream_t stream;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_w.as<float>(), d_out.as(), T, stream);
  check_cuda(cudaStreamEndCapture(stream, &graph), "end capture");
  check_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (int replay = 0; replay < 3; ++replay) {
    const auto hidden = random_hidden(T, c.H, 50 + replay, 2.0f);
    const TopK topk = random_topk(T, c.E, c.k, 60 + replay, replay == 1 ? TopKMask::experts_from_id(c.E / 2) : TopKMask{});
    d_hidden.upload(hidden.data(), hidden.size() * 2);
    d_ids.upload(topk.ids.data(), topk.ids.size() * 4);
    d_w.upload(topk.weights.data(), topk.weights.size() * 4);
    d_out.fill(0xFF);
    check_cuda(cudaGraphLaunch(exec, stream), "graph launch");
    check_cuda(cudaStreamSynchronize(stream), "replay");
    const auto ref = reference::moe_forward(w, hidden.data(), T, topk, c.act, precision);
    EXPECT_LT(relative_error(d_out.to_host<std::uint16_t>(), ref), tolerance_for(precision)) << c.name << " T=" << T << " replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Five forwards of the same inputs give the same bits.
void check_bitwise_repeats(const MoeLayer& layer, const Case& c, int T) {
  const auto hidden = random_hidden(T, c.H, 9 + T, 2.0f);
  const TopK topk = random_topk(T, c.E, c.k, 10 + T);
  std::vector<std::uint16_t> first;
  for (int run = 0; run < 5; ++run) {
    const std::vector<std::uint16_t> out = forward_on_device(layer, hidden, topk);
    if (run == 0) first = out;
    else ASSERT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * 2)) << c.name << " T=" << T << " run " << run;
  }
}

// A GEMM path: the configuration and the activation precision (W4A8 runs on wgmma).
struct Path {
  GemmTile tile;
  ActivationPrecision precision;
};
class LayerPaths : public ::testing::TestWithParam<Path> {};

TEST_P(LayerPaths, RepeatedRunsAreBitwiseIdentical) {
  MXMOE_REQUIRE_HOPPER();
  const Case c = small_case();
  const auto w = weights_for(c, 5);
  MoeLayer layer(w, options_for(c, 512, GetParam().tile, GetParam().precision));
  for (int T : {1, 64, 512}) check_bitwise_repeats(layer, c, T);
}

TEST_P(LayerPaths, CudaGraphCaptureAndReplayWithNewInputs) {
  MXMOE_REQUIRE_HOPPER();
  const Case c = small_case();
  const auto w = weights_for(c, 6);
  const int T = 96;
  MoeLayer layer(w, options_for(c, T, GetParam().tile, GetParam().precision));
  check_graph_replays(layer, w, c, T, GetParam().precision);
}

INSTANTIATE_TEST_SUITE_P(Paths, LayerPaths,
                         ::testing::Values(Path{GemmTile::Auto, ActivationPrecision::Bf16}, Path{GemmTile::Wgmma, ActivationPrecision::Bf16},
                                           Path{GemmTile::Auto, ActivationPrecision::Fp8PerToken},
                                           Path{GemmTile::Wgmma, ActivationPrecision::Fp8PerToken},
                                           Path{GemmTile::WgmmaNarrow, ActivationPrecision::Bf16},
                                           Path{GemmTile::WgmmaNarrow, ActivationPrecision::Fp8PerToken},
                                           Path{GemmTile::WgmmaSmall, ActivationPrecision::Bf16},
                                           Path{GemmTile::WgmmaSmall, ActivationPrecision::Fp8PerToken}),
                         [](const auto& info) {
                           std::string name = std::string(gemm_tile_name(info.param.tile)) + "_" + activation_precision_name(info.param.precision);
                           std::replace(name.begin(), name.end(), '-', '_');  // test names take letters, digits, '_'
                           return name;
                         });

// GEMM1's K split (kernels::gemm1_k_splits): one or two tokens on a layer with a small intermediate
// and a long K give GEMM1 few CTAs, so it splits K and kernels/gate_up_reduce sums the splits. On
// shapes whose plan says so (checked, so that the test cannot pass without the split): the oracle
// with and without masked experts, W4A8 against the FP8 oracle, five bit-identical repeats, and
// graph replays with new inputs.
TEST(Layer, Gemm1KSplitMatchesTheOracle) {
  MXMOE_REQUIRE_HOPPER();
  const Case cases[] = {{"e64-h3712-i320-k2", 3712, 320, 64, 2, ActivationConfig::silu_mul(), false, 1.0f},
                        {"e32-h2880-i96-k4-gpt-oss", 2880, 96, 32, 4, ActivationConfig::gpt_oss(), true, 4.0f},
                        {"e16-h4128-i64-k6-clamped", 4128, 64, 16, 6, ActivationConfig::clamped_silu_mul(10.0f), true, 4.0f}};
  std::uint32_t seed = 700;
  for (const Case& c : cases) {
    const auto w = weights_for(c, seed);
    for (ActivationPrecision precision : {ActivationPrecision::Bf16, ActivationPrecision::Fp8PerToken}) {
      MoeLayer layer(w, options_for(c, 64, GemmTile::Auto, precision));
      for (int T : {1, 2}) {
        const std::string plan = layer.gemm_plan_for(T);
        ASSERT_NE(plan.find("w13 K in"), std::string::npos) << c.name << " T=" << T << ": " << plan;
        check_forward(layer, w, c, T, false, seed += 7, precision);
        check_forward(layer, w, c, T, true, seed += 7, precision);
      }
      check_bitwise_repeats(layer, c, 1);
      check_bitwise_repeats(layer, c, 2);
      check_graph_replays(layer, w, c, 1, precision);
      check_graph_replays(layer, w, c, 2, precision);
    }
  }
}

// GEMM2's K split (kernels::gemm2_k_splits): a layer with a small hidden size and a long
// intermediate gives GEMM2 few CTAs, so it splits K in two to eight and the combine adds the splits
// (its unrolled 4- and 8-split forms and the loop). On Tiny (one and two tokens, direct blocks) and
// Decode (aligned blocks), where the plan says so (checked, so that the test cannot pass without the
// split): the oracle with and without masked experts, W4A8 against the FP8 oracle where its plan
// splits too, bit-identical repeats and graph replays with new inputs.
TEST(Layer, Gemm2KSplitMatchesTheOracle) {
  MXMOE_REQUIRE_HOPPER();
  const Case cases[] = {{"e207-h320-i2304-k4", 320, 2304, 207, 4, ActivationConfig::silu_mul(), false, 1.0f},
                        {"e8-h352-i2368-k1-gpt-oss", 352, 2368, 8, 1, ActivationConfig::gpt_oss(), true, 4.0f},
                        {"e24-h256-i4096-k8-clamped", 256, 4096, 24, 8, ActivationConfig::clamped_silu_mul(10.0f), true, 2.0f}};
  const std::vector<int> split_tokens[] = {{1, 2}, {1, 4, 16}, {1, 2, 4}};  // each case's, with a split w2 K under bf16
  std::uint32_t seed = 900;
  int splits_seen = 0;
  for (int i = 0; i < 3; ++i) {
    const Case& c = cases[i];
    const std::vector<int>& tokens = split_tokens[i];
    const auto w = weights_for(c, seed);
    for (ActivationPrecision precision : {ActivationPrecision::Bf16, ActivationPrecision::Fp8PerToken}) {
      MoeLayer layer(w, options_for(c, 64, GemmTile::Auto, precision));
      for (int T : tokens) {
        const std::string plan = layer.gemm_plan_for(T);
        const bool split = plan.find("w2 K in") != std::string::npos;
        if (precision == ActivationPrecision::Bf16) {
          ASSERT_TRUE(split) << c.name << " T=" << T << ": " << plan;
        }
        splits_seen += split;
        check_forward(layer, w, c, T, false, seed += 7, precision);
        check_forward(layer, w, c, T, true, seed += 7, precision);
        check_bitwise_repeats(layer, c, T);
      }
      check_graph_replays(layer, w, c, tokens.back(), precision);
    }
  }
  EXPECT_GE(splits_seen, 8);
}

// Batch invariance (issue 15, item 3): in the batch-invariant mode a token's output has the same bits
// whether it runs alone, in a small batch or in one large enough that the default mode would take the
// wgmma path, at the front of the batch or at its end. The default mode is checked at every size on
// its own (oracle), and how many sub-batches differ is printed: on the H200 only its K split (T = 1,
// 2) did; its mma.sync sub-batches matched its wgmma batch bit for bit. W4A8 is checked in the
// batch-invariant mode too (its quantisation is per token and per routed pair, so batch-free).
TEST(Layer, BatchInvariantModeGivesATokenTheSameBitsInAnyBatch) {
  MXMOE_REQUIRE_HOPPER();
  const Case c{"batch-invariant", 1024, 512, 16, 4, ActivationConfig::silu_mul(), true, 2.0f};
  const auto w = weights_for(c, 21);
  const int big = 2048;  // 512 pairs per expert: the default mode runs wgmma there
  const auto hidden = random_hidden(big, c.H, 77, c.hidden_std);
  const TopK topk = random_topk(big, c.E, c.k, 78);
  auto slice = [&](int first, int T) {
    std::vector<std::uint16_t> h(hidden.begin() + static_cast<std::ptrdiff_t>(first) * c.H,
                                 hidden.begin() + static_cast<std::ptrdiff_t>(first + T) * c.H);
    TopK t;
    t.num_tokens = T;
    t.top_k = c.k;
    t.ids.assign(topk.ids.begin() + static_cast<std::ptrdiff_t>(first) * c.k, topk.ids.begin() + static_cast<std::ptrdiff_t>(first + T) * c.k);
    t.weights.assign(topk.weights.begin() + static_cast<std::ptrdiff_t>(first) * c.k,
                     topk.weights.begin() + static_cast<std::ptrdiff_t>(first + T) * c.k);
    return std::make_pair(h, t);
  };
  for (const auto& [invariant, precision] : {std::pair{true, ActivationPrecision::Bf16}, std::pair{false, ActivationPrecision::Bf16},
                                             std::pair{true, ActivationPrecision::Fp8PerToken}}) {
    MoeLayerOptions o = options_for(c, big, GemmTile::Auto, precision);
    o.batch_invariant = invariant;
    MoeLayer layer(w, o);
    const std::vector<std::uint16_t> all = forward_on_device(layer, hidden, topk);
    int differing = 0;
    for (int T : {1, 2, 3, 8, 64, 333}) {
      for (int first : {0, big - T}) {  // the batch's first tokens, then its last ones
        const auto [h, t] = slice(first, T);
        const std::vector<std::uint16_t> out = forward_on_device(layer, h, t);
        const bool same = std::memcmp(out.data(), all.data() + static_cast<std::size_t>(first) * c.H, out.size() * 2) == 0;
        if (invariant) {
          EXPECT_TRUE(same) << "T=" << T << " tokens from " << first << " differ from the same tokens at T=" << big;
        }
        differing += same ? 0 : 1;
        EXPECT_LT(sampled_error(w, c, h, t, out, 8, precision), tolerance_for(precision)) << "T=" << T;
      }
    }
    std::printf("  %s mode (%s): %d of 12 sub-batches differ in some bit from the same tokens at T=%d\n",
                invariant ? "batch-invariant" : "default", activation_precision_name(precision), differing, big);
  }
}

TEST(Layer, RoutesFromLogitsLikeTheOracle) {
  MXMOE_REQUIRE_HOPPER();
  const Case c = small_case();
  const auto w = weights_for(c, 7);
  const int T = 200;
  const RoutingConfig configs[] = {RoutingConfig::softmax(c.k, true), RoutingConfig::softmax(c.k, false),
                                   RoutingConfig::gpt_oss(c.k), RoutingConfig::deepseek_v3(c.k, 4, 2, 2.5f),
                                   RoutingConfig::deepseek_v4(c.k, 1.5f)};
  MoeLayer layer(w, {T, c.k, c.act, 0});
  for (const auto& rc : configs) {
    const auto hidden = random_hidden(T, c.H, 70, 2.0f);
    const auto logits = reference::router_logits(w, hidden.data(), T);
    const TopK topk = reference::route(logits.data(), T, c.E, rc, w.correction_bias->as<float>());
    DeviceBuffer d_hidden = DeviceBuffer::from_host(hidden, "hidden"), d_out(static_cast<std::size_t>(T) * c.H * 2, "out");
    DeviceBuffer d_logits = DeviceBuffer::from_host(logits, "logits");
    d_out.fill(0xFF);
    layer.forward_from_logits(d_hidden.as(), d_logits.as<float>(), rc, d_out.as(), T, nullptr);
    check_cuda(cudaDeviceSynchronize(), "forward_from_logits");
    const auto ref = reference::moe_forward(w, hidden.data(), T, topk, c.act);
    EXPECT_LT(relative_error(d_out.to_host<std::uint16_t>(), ref), kTolerance) << routing_mode_name(rc.mode);
  }
}

TEST(Layer, RejectsBadInputWithClearErrors) {
  MXMOE_REQUIRE_HOPPER();
  const Case c = small_case();
  auto w = weights_for(c, 8);
  MoeLayer layer(w, {8, c.k, c.act, 0});
  DeviceBuffer buf(8 * 512 * 2, "hidden and out");
  DeviceBuffer ids(8 * 4 * 4, "ids");
  DeviceBuffer wts(8 * 4 * 4, "weights");
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { layer.forward(buf.as(), ids.as<std::int32_t>(), wts.as<float>(), buf.as(), 9, nullptr); }, "num_tokens");
  expect_error([&] { layer.forward(nullptr, ids.as<std::int32_t>(), wts.as<float>(), buf.as(), 1, nullptr); }, "hidden is null");
  expect_error([&] { layer.forward(reinterpret_cast<char*>(buf.as()) + 2, ids.as<std::int32_t>(), wts.as<float>(), buf.as(), 1, nullptr); }, "aligned");
  expect_error([&] { MoeLayer bad(w, {8, 0, c.act, 0}); }, "top_k");
  expect_error([&] { MoeLayer bad(w, {0, c.k, c.act, 0}); }, "max_tokens");
  expect_error([&] { MoeLayer bad(w, {8, c.k, ActivationConfig::clamped_silu_mul(-1.0f), 0}); }, "limit");
  expect_error([&] { MoeLayer bad(w, {8, c.k, c.act, 7}); }, "device 7");
  // Scale bytes above 128 are fine now (tests/gpu/test_layer_formats.cpp); the NaN byte is not.
  w.w2_scale.mutable_as<std::uint8_t>()[3 * (512 * 256 / 32) + 5] = 0xFF;  // expert 3
  expect_error([&] { MoeLayer bad(w, {8, c.k, c.act, 0}); }, "w2_scale");
}

TEST(Layer, IdsOutOfRangeAreSkippedWithoutFault) {
  MXMOE_REQUIRE_HOPPER();
  const Case c = small_case();
  const auto w = weights_for(c, 9);
  const int T = 32;
  MoeLayer layer(w, {T, c.k, c.act, 0});
  const auto hidden = random_hidden(T, c.H, 80, 2.0f);
  TopK topk = random_topk(T, c.E, c.k, 81);
  TopK oracle_topk = topk;
  for (std::size_t i = 0; i < topk.ids.size(); i += 3) {
    topk.ids[i] = i % 2 ? -1 : c.E + static_cast<int>(i);  // another rank's expert, or garbage
    oracle_topk.ids[i] = -1;
  }
  const std::vector<std::uint16_t> out = forward_on_device(layer, hidden, topk);
  const auto ref = reference::moe_forward(w, hidden.data(), T, oracle_topk, c.act);
  EXPECT_LT(relative_error(out, ref), kTolerance);
}

TEST(Layer, PreparesAWholeDsv4FlashLayerQuickly) {
  MXMOE_REQUIRE_HOPPER();
  const ModelPreset p = find_preset("dsv4-flash");
  SyntheticSpec spec;
  spec.num_experts = p.num_experts;
  spec.hidden = p.hidden;
  spec.inter = p.inter;
  const auto w = make_synthetic_weights(spec);
  MoeLayer layer(w, {16, p.top_k, p.activation, 0});
  std::printf("  dsv4-flash prepare: %.2f ms on the GPU for %.2f GB\n", layer.prepare_ms(),
              static_cast<double>(w.expert_weight_bytes()) * p.num_experts / 1e9);
  RecordProperty("prepare_ms", std::to_string(layer.prepare_ms()));
  const auto hidden = random_hidden(16, p.hidden, 90, 4.0f);
  const TopK topk = random_topk(16, p.num_experts, p.top_k, 91);
  const std::vector<std::uint16_t> out = forward_on_device(layer, hidden, topk);
  const auto ref = reference::moe_forward(w, hidden.data(), 16, topk, p.activation);
  EXPECT_LT(relative_error(out, ref), kTolerance);
}

}  // namespace

namespace {

// What the plan never makes, the GEMM launch refuses with a message before any device work (so this
// runs without a GPU): more direct blocks than one pass of the ids reads, direct blocks or a K split
// on a wgmma configuration.
TEST(GemmLaunch, RefusesBlocksThePlanNeverMakes) {
  const std::int32_t ids[kernels::kDirectMaxPairs + 1] = {};
  kernels::MoeGemmParams p{};
  p.k_splits = 1;
  p.direct_ids = ids;
  p.direct_blocks = kernels::kDirectMaxPairs + 1;
  mxmoe::test::expect_error([&] { kernels::launch_moe_gemm1(GemmTile::Tiny, kernels::GemmFormat::Mxfp4, p, p.direct_blocks, nullptr); },
                            ErrorCode::InvalidArgument, "17 direct blocks, more than kDirectMaxPairs (16)");
  p.direct_blocks = 2;
  mxmoe::test::expect_error([&] { kernels::launch_moe_gemm2(GemmTile::Wgmma, kernels::GemmFormat::Mxfp4, p, 2, nullptr); },
                            ErrorCode::InvalidArgument, "the wgmma configuration takes aligned blocks");
  p.direct_ids = nullptr;
  p.k_splits = 2;
  mxmoe::test::expect_error([&] { kernels::launch_moe_gemm2(GemmTile::Wgmma, kernels::GemmFormat::Mxfp4, p, 2, nullptr); },
                            ErrorCode::InvalidArgument, "the wgmma configuration does not split K");
}

// The corners of token alignment at decode sizes: one expert taking every pair (more than a block
// holds), ids that are -1 or past E, every id masked; and the direct blocks of one and two tokens.
TEST(Layer, AlignmentCornersMatchTheOracle) {
  MXMOE_REQUIRE_HOPPER();
  const Case c{"small-batch", 512, 256, 16, 8, ActivationConfig::silu_mul(), true, 2.0f};
  const auto w = weights_for(c, 11);
  MoeLayer layer(w, {8, c.k, c.act, 0});
  struct Variant {
    const char* name;
    int T;
    std::function<void(TopK&)> edit;
  };
  const Variant variants[] = {
      {"random T=1", 1, [](TopK&) {}},
      {"random T=4 (32 pairs)", 4, [](TopK&) {}},
      {"random T=5 (40 pairs)", 5, [](TopK&) {}},
      {"one expert takes all 32 pairs", 4, [](TopK& t) { std::fill(t.ids.begin(), t.ids.end(), 3); }},
      {"masked and out-of-range ids", 4,
       [&](TopK& t) {
         for (std::size_t i = 0; i < t.ids.size(); ++i)
           if (i % 3 == 0) t.ids[i] = i % 2 ? -1 : c.E + 7;
       }},
      {"every id masked", 2, [](TopK& t) { std::fill(t.ids.begin(), t.ids.end(), -1); }},
      // One token runs direct blocks (a block per routed pair, no alignment kernel): masked, past-E
      // and repeated ids among its slots, and all of them masked.
      {"one token: masked, past-E and repeated ids (direct)", 1,
       [&](TopK& t) { t.ids = {-1, c.E + 3, 2, 2, 5, -1, 7, c.E - 1}; }},
      {"one token, every id masked (direct)", 1, [](TopK& t) { std::fill(t.ids.begin(), t.ids.end(), -1); }},
      // Two tokens run direct too: the block of an expert's first pair runs its pairs, up to a
      // block's 8. Shared experts with masks and past-E ids between them; one expert in every
      // slot (repeated ids: 16 pairs, two groups of 8); the same experts in both tokens.
      {"two tokens share experts, masked and past-E ids (direct)", 2,
       [&](TopK& t) { t.ids = {4, -1, 9, c.E + 1, 0, 12, 6, 3, 9, 4, c.E + 2, 1, -1, 12, 15, 3}; }},
      {"two tokens, every pair on one expert (direct, two blocks of 8)", 2,
       [](TopK& t) { std::fill(t.ids.begin(), t.ids.end(), 5); }},
      {"two tokens, the same experts (direct)", 2,
       [](TopK& t) { std::copy(t.ids.begin(), t.ids.begin() + t.top_k, t.ids.begin() + t.top_k); }},
  };
  std::uint32_t seed = 300;
  for (const auto& v : variants) {
    const auto hidden = random_hidden(v.T, c.H, ++seed, c.hidden_std);
    TopK topk = random_topk(v.T, c.E, c.k, ++seed);
    v.edit(topk);
    TopK oracle_topk = topk;
    for (auto& id : oracle_topk.ids)
      if (id >= c.E) id = -1;
    const std::vector<std::uint16_t> out = forward_on_device(layer, hidden, topk);
    const auto ref = reference::moe_forward(w, hidden.data(), v.T, oracle_topk, c.act);
    bool all_masked = true;
    for (auto id : oracle_topk.ids) all_masked &= id < 0;
    if (all_masked) {
      for (auto x : out) ASSERT_EQ(x & 0x7fff, 0) << v.name;
    } else {
      EXPECT_LT(relative_error(out, ref), kTolerance) << v.name;
    }
  }
}

}  // namespace

namespace {

// Sets token t's slot s to expert e, keeping the token's experts distinct (a slot already holding e
// takes the slot's old expert).
void route(TopK& topk, int t, int s, int e) {
  const std::size_t row = static_cast<std::size_t>(t) * topk.top_k;
  for (int j = 0; j < topk.top_k; ++j)
    if (topk.ids[row + j] == e) topk.ids[row + j] = topk.ids[row + s];
  topk.ids[row + s] = e;
}

// The two lanes (kernels::GemmLanes): skewed routing sends the hot experts to the wgmma lane and the
// rest to the narrow configuration, in one forward. Corners: only the narrow lane gets blocks (the
// wide grid all exits), only the wide lane does (every pair on k experts: the narrow grids all exit,
// so GEMM2's wide lane and the combine must still see GEMM1 finished), masks on top, and the same
// bits on every run (an expert's lane depends only on its count). Two layers: experts of 4.7 MB
// (above kernels::kWideLaneMinExpertBytes: the lane opens from kWideLaneMinTokens tokens) and of
// 1.15 MB (small experts: the lane opens under Decode from kWideLaneSmallExpertMinTokens tokens and
// kWideLaneSmallExpertMinPairs pairs), each token count with whether its plan has the lane (none
// where the average already picks GemmWgmma, nor for small experts under a wgmma configuration).
struct LaneRow {
  int T;
  bool lane;
};
void check_lanes_under_skew(const Case& c, std::initializer_list<LaneRow> rows, std::uint32_t seed) {
  const auto w = weights_for(c, seed);
  MoeLayer layer(w, options_for(c, 1024));
  struct Variant {
    const char* name;
    std::function<void(TopK&)> edit;
  };
  const Variant variants[] = {
      {"uniform", [](TopK&) {}},
      {"one hot expert", [](TopK& t) { for (int i = 0; i < t.num_tokens; ++i) route(t, i, 0, 5); }},
      {"three hot experts",
       [](TopK& t) {
         for (int i = 0; i < t.num_tokens; ++i) {
           route(t, i, 0, 7 + i % 3);
           if (i % 2) route(t, i, 1, 40);
         }
       }},
      {"every pair on k experts",
       [](TopK& t) {
         for (int i = 0; i < t.num_tokens; ++i)
           for (int s = 0; s < t.top_k; ++s) route(t, i, s, 60 - s);
       }},
      {"hot and half masked",
       [&](TopK& t) {
         for (int i = 0; i < t.num_tokens; ++i) route(t, i, 0, 5);
         for (std::size_t i = 0; i < t.ids.size(); ++i)
           if (t.ids[i] >= c.E / 2 && t.ids[i] != 5) t.ids[i] = -1;
       }},
  };
  for (const auto [T, lane] : rows) {
    const std::string plan = layer.gemm_plan_for(T);
    std::printf("  %s T=%-5d %s\n", c.name.c_str(), T, plan.c_str());
    EXPECT_EQ(plan.find(" + wgmma") != std::string::npos, lane) << c.name << " T=" << T << ": " << plan;
    for (const auto& v : variants) {
      const auto hidden = random_hidden(T, c.H, ++seed, c.hidden_std);
      TopK topk = random_topk(T, c.E, c.k, ++seed);
      v.edit(topk);
      const std::vector<std::uint16_t> out = forward_on_device(layer, hidden, topk);
      EXPECT_LT(sampled_error(w, c, hidden, topk, out), kTolerance) << c.name << " " << v.name << " T=" << T;
      const std::vector<std::uint16_t> again = forward_on_device(layer, hidden, topk);
      EXPECT_EQ(0, std::memcmp(out.data(), again.data(), out.size() * 2)) << v.name << " T=" << T << ": a second run differs";
    }
  }
}

TEST(Layer, SkewedRoutingRunsBothLanesLikeTheOracle) {
  MXMOE_REQUIRE_HOPPER();
  static_assert(kernels::kWideLaneMinTokens == 32 && kernels::kWideLaneSmallExpertMinTokens == 256 &&
                    kernels::kWideLaneSmallExpertMinPairs == 768 && kernels::kWideLaneSmallExpertMinBytes == (1 << 20),
                "the rows below");
  // 2, 6 and 21 pairs per expert: decode and wgmma-small with the lane; 62: wgmma, no lane.
  check_lanes_under_skew({"lanes", 2048, 1536, 64, 4, ActivationConfig::clamped_silu_mul(10.0f), true, 4.0f},
                         {{32, true}, {96, true}, {333, true}, {1000, false}}, 31);
  // 1.5, 4 and 4 pairs per expert on Decode (384, 1020 and 1024 routed pairs): the lane from 256
  // tokens and 768 pairs; 15.6: wgmma-small, no lane.
  check_lanes_under_skew({"small-experts", 1024, 704, 256, 4, ActivationConfig::gpt_oss(), true, 2.0f},
                         {{96, false}, {255, false}, {256, true}, {1000, false}}, 37);
}

}  // namespace

namespace {

// Other implementations crashed at M x top-k = 131072 routed pairs (a reduction mode forced on at
// large token counts): run the largest batch the test layer is built for, 32768 tokens x top-4.
TEST(Layer, LargestBatchOf131072RoutedPairs) {
  MXMOE_REQUIRE_HOPPER();
  const Case c{"largest-batch", 512, 256, 16, 4, ActivationConfig::silu_mul(), false, 1.0f};
  const auto w = weights_for(c, 12);
  const int T = 32768;
  for (GemmTile tile : {GemmTile::Auto, GemmTile::Prefill, GemmTile::Wgmma}) {
    MoeLayer layer(w, options_for(c, T, tile));
    check_forward(layer, w, c, T, false, 400);
    check_forward(layer, w, c, T, true, 401);
  }
}

}  // namespace
