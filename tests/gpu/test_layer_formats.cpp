// MoeLayer on the GPU against the CPU oracle for the weight formats beyond MXFP4's common case:
// E8M0 scale bytes across the whole range 0x00..0xFE (the two-multiply kernel format), and NVFP4
// (UE4M3 per 16 + global scales) with bf16 and fp16 activations. Fresh random data, outputs
// poisoned, NaN fails (verify::compare).
// Tolerance: as tests/gpu/test_moe_layer.cpp, both sides dequantise exactly and accumulate in fp32;
// they differ in summation order and in rounding flips of the 16-bit intermediate and output:
// norm-wise relative error < 1e-2 (observed near 1e-3 in bf16, lower in fp16). The E8M0 cases also
// check every output column on its own (< 2e-2): a column's magnitude follows its w2 row's scales,
// which span 2^-127..2^127 across the rows, and the norm of the whole output would see only the
// largest.
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include <cuda_runtime.h>

#include "formats/bf16.hpp"
#include "formats/fp16.hpp"
#include "mxmoe/device_buffer.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/presets.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::test;
using namespace mxmoe::verify;

namespace {

constexpr double kTolerance = 1e-2;

// 16-bit activations (bf16 or fp16 bits) widened exactly, for the per-column check.
std::vector<double> widen(const std::vector<std::uint16_t>& bits, DType dtype) {
  std::vector<double> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i)
    out[i] = dtype == DType::F16 ? formats::fp16_to_float(bits[i]) : formats::bf16_to_float(bits[i]);
  return out;
}

std::vector<std::uint16_t> forward_on_device(const MoeLayer& layer, const std::vector<std::uint16_t>& hidden, const TopK& topk) {
  const DeviceBuffer d_hidden = DeviceBuffer::from_host(hidden, "hidden"), d_ids = DeviceBuffer::from_host(topk.ids, "ids"),
                     d_w = DeviceBuffer::from_host(topk.weights, "weights");
  DeviceBuffer d_out(hidden.size() * 2, "out");
  d_out.fill(0xFF);  // NaN in bf16 and fp16
  layer.forward(d_hidden.as(), d_ids.as<std::int32_t>(), d_w.as<float>(), d_out.as(), topk.num_tokens, nullptr);
  check_cuda(cudaDeviceSynchronize(), "forward");
  return d_out.to_host<std::uint16_t>();
}

struct OracleRun {
  double err = 0.0, worst_column = 0.0;
};

// One forward of T tokens, every token checked against the oracle.
OracleRun run_against_oracle(const MoeLayer& layer, const CanonicalMoeWeights& w, const ActivationConfig& act, int T, int k,
                       double hidden_std, bool mask_half, std::uint64_t seed) {
  const DType dtype = w.format.activation_dtype;
  const int H = w.hidden;
  const auto hidden = random_hidden(T, H, seed, hidden_std, dtype);
  const TopK topk = random_topk(T, w.num_experts, k, seed + 1, mask_half ? TopKMask::experts_from_id(w.num_experts / 2) : TopKMask{});
  const auto got = widen(forward_on_device(layer, hidden, topk), dtype);
  const auto want = widen(reference::moe_forward(w, hidden.data(), T, topk, act), dtype);
  OracleRun r;
  r.err = compare(got, want).relative_error;
  for (int h = 0; h < H; ++h) {
    std::vector<double> g(T), v(T);
    for (int t = 0; t < T; ++t) {
      g[t] = got[static_cast<std::size_t>(t) * H + h];
      v[t] = want[static_cast<std::size_t>(t) * H + h];
    }
    const Comparison c = compare(g, v);
    if (!c.finite) r.worst_column = INFINITY;
    else if (c.max_abs_want > 0) r.worst_column = std::max(r.worst_column, c.relative_error);
  }
  return r;
}

// ---- E8M0 bytes across the whole range ----

// Rewrites every row's scale bytes to a window [base, base + span], span = min(row_span, hi - lo),
// with base uniform in [lo, hi - span] (so rows differ by up to 2^(hi-lo)), and clamps codes under
// bytes 253/254 to magnitude <= 1.5, so that no weight is infinite (the loader refuses those). A span
// above 128 puts both ends of the window in every row (groups 0 and 1): rows that Mxfp4Shifted's
// per-row shift cannot take.
void set_scale_windows(HostTensor& packed, HostTensor& scales, std::int64_t rows, int groups, int lo, int hi, std::uint32_t seed,
                       int row_span = 30) {
  std::mt19937 rng(seed);
  const int span = std::min(row_span, hi - lo);
  auto* s = scales.mutable_as<std::uint8_t>();
  auto* p = packed.mutable_as<std::uint8_t>();
  for (std::int64_t r = 0; r < rows; ++r) {
    const int base = lo + static_cast<int>(rng() % static_cast<unsigned>(hi - span - lo + 1));
    for (int g = 0; g < groups; ++g) {
      const int b = span > 128 && g < 2 ? base + g * span : base + static_cast<int>(rng() % static_cast<unsigned>(span + 1));
      s[r * groups + g] = static_cast<std::uint8_t>(b);
      if (b < 253) continue;
      for (int i = 0; i < 16; ++i) {  // the group's 32 codes, two per byte
        std::uint8_t& byte = p[(r * groups + g) * 16 + i];
        auto clamp = [](std::uint8_t code) { return static_cast<std::uint8_t>((code & 8u) | std::min<std::uint8_t>(code & 7u, 3u)); };
        byte = static_cast<std::uint8_t>(clamp(byte & 15u) | clamp(byte >> 4) << 4);
      }
    }
  }
}

struct WideCase {
  const char* name;
  int w13_lo, w13_hi, w2_lo, w2_hi;
  double hidden_std;
  ActivationConfig act;
  const char* format;  // the kernels' format the layer must pick (MoeLayer::gemm_format)
  int w2_row_span = 30;  // the bytes of one w2 row span at most this much
};

class WideScales : public ::testing::TestWithParam<WideCase> {};

TEST_P(WideScales, EveryE8m0ByteMatchesTheOracle) {
  MXMOE_REQUIRE_HOPPER();
  const WideCase& c = GetParam();
  SyntheticSpec spec;
  spec.num_experts = 16;
  spec.hidden = 512;
  spec.inter = 256;
  spec.with_biases = false;
  spec.seed = 77;
  CanonicalMoeWeights w = make_synthetic_weights(spec);
  const std::int64_t E = spec.num_experts, H = spec.hidden, I = spec.inter;
  set_scale_windows(w.w13, w.w13_scale, E * 2 * I, static_cast<int>(H / 32), c.w13_lo, c.w13_hi, 1);
  set_scale_windows(w.w2, w.w2_scale, E * H, static_cast<int>(I / 32), c.w2_lo, c.w2_hi, 2, c.w2_row_span);
  const int k = 4;
  MoeLayer layer(w, {512, k, c.act, 0});
  ASSERT_STREQ(layer.gemm_format(), c.format) << c.name;
  std::uint64_t seed = 300;
  for (int T : {1, 16, 64, 512}) {
    const OracleRun r = run_against_oracle(layer, w, c.act, T, k, c.hidden_std, false, seed += 11);
    EXPECT_LT(r.err, kTolerance) << c.name << " T=" << T;
    EXPECT_LT(r.worst_column, 2 * kTolerance) << c.name << " T=" << T;
    std::printf("  %-28s T=%4d rel err %.2e, worst column %.2e\n", c.name, T, r.err, r.worst_column);
  }
}

// Scale windows (E8M0 bytes) of w13 and w2 rows, and hidden magnitudes that keep every value finite:
// tiny w13 scales down to 2^-127 under huge w2 ones up to 2^127, the reverse, and a middle band. Each
// row spans at most 30 bytes there (rows of one matrix differ by up to hi - lo: 2^104 in
// w13-tiny-w2-huge's w2, whose rows near byte 150 a per-(expert, half) shift of 126 underflowed at
// T=1), so the layer runs Mxfp4Shifted (per-row shift, one multiply, 2^d in the epilogue);
// w2-span-above-128 makes every w2 row span 40..200 (160 bytes, 2^160 within one row), the
// pathological case left to Mxfp4Wide.
INSTANTIATE_TEST_SUITE_P(
    Ranges, WideScales,
    ::testing::Values(WideCase{"w13-tiny-w2-huge", 0, 30, 150, 254, 1.0, ActivationConfig::gpt_oss(), "mxfp4-shifted"},
                      WideCase{"w13-huge-w2-tiny", 224, 254, 0, 60, std::ldexp(1.0, -118), ActivationConfig::silu_mul(),
                               "mxfp4-shifted"},
                      WideCase{"both-middle", 100, 160, 96, 150, 1.0, ActivationConfig::silu_mul(), "mxfp4-shifted"},
                      WideCase{"w2-span-above-128", 100, 130, 40, 200, 1.0, ActivationConfig::silu_mul(), "mxfp4-wide", 160}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

// ---- NVFP4 ----

struct Nvfp4Case {
  std::string name;
  int H, I, E, k;
  ActivationConfig act;
  bool biases;
  float hidden_std;
  DType activations;
};

std::ostream& operator<<(std::ostream& os, const Nvfp4Case& c) { return os << c.name; }

class Nvfp4Layer : public ::testing::TestWithParam<Nvfp4Case> {};

TEST_P(Nvfp4Layer, MatchesOracleAtConcurrentBatchSizes) {
  MXMOE_REQUIRE_HOPPER();
  const Nvfp4Case& c = GetParam();
  SyntheticSpec spec;
  spec.num_experts = c.E;
  spec.hidden = c.H;
  spec.inter = c.I;
  spec.with_biases = c.biases;
  spec.seed = 91;
  spec.format = WeightFormat::nvfp4_with(c.activations);
  CanonicalMoeWeights w = make_synthetic_weights(spec);
  ASSERT_EQ(w.format.group_size, 16);
  // Scales a real NVFP4 checkpoint holds besides the common ones: 0 (a dead block, whose nonzero
  // codes must count for nothing) and UE4M3 subnormals (1..7 x 2^-9), on about 2% of the blocks each.
  std::mt19937 rng(17);
  for (HostTensor* t : {&w.w13_scale, &w.w2_scale}) {
    auto* p = t->mutable_as<std::uint8_t>();
    for (std::int64_t i = 0; i < t->numel(); ++i) {
      const unsigned r = rng() % 100;
      if (r < 2) p[i] = 0;
      else if (r < 4) p[i] = static_cast<std::uint8_t>(1 + rng() % 7);
    }
  }
  ASSERT_TRUE(w.w13_global_scale && w.w2_global_scale);
  MoeLayerOptions o;
  o.max_tokens = 1024;
  o.top_k = c.k;
  o.activation = c.act;
  MoeLayer layer(w, o);
  std::uint64_t seed = 500;
  // 8 and more concurrent requests (the sizes at which Marlin NVFP4 was reported to break), and beyond.
  for (int T : {1, 8, 9, 16, 64, 333, 1024}) {
    const OracleRun r = run_against_oracle(layer, w, c.act, T, c.k, c.hidden_std, false, seed += 13);
    EXPECT_LT(r.err, kTolerance) << c.name << " T=" << T;
    std::printf("  %-26s T=%5d rel err %.2e\n", c.name.c_str(), T, r.err);
  }
  for (int T : {9, 64}) {
    const OracleRun r = run_against_oracle(layer, w, c.act, T, c.k, c.hidden_std, true, seed += 13);
    EXPECT_LT(r.err, kTolerance) << c.name << " T=" << T << " masked";
  }
  // Bitwise repeatable.
  const auto hidden = random_hidden(64, c.H, 9, c.hidden_std, c.activations);
  const TopK topk = random_topk(64, c.E, c.k, 10);
  const auto first = forward_on_device(layer, hidden, topk);
  for (int run = 0; run < 3; ++run) ASSERT_EQ(forward_on_device(layer, hidden, topk), first) << "run " << run;
}

Nvfp4Case preset_nvfp4(const std::string& preset, int experts, float hidden_std, DType dtype) {
  const ModelPreset& p = find_preset(preset);
  return {preset + (dtype == DType::F16 ? "-f16" : "-bf16"), p.hidden, p.inter, experts, p.top_k, p.activation, p.biases,
          hidden_std, dtype};
}

INSTANTIATE_TEST_SUITE_P(
    Models, Nvfp4Layer,
    ::testing::Values(preset_nvfp4("dsv4-flash", 16, 4.0f, DType::BF16), preset_nvfp4("dsv4-flash", 16, 1.0f, DType::F16),
                      preset_nvfp4("gpt-oss-120b", 8, 4.0f, DType::BF16), preset_nvfp4("gpt-oss-120b", 8, 1.0f, DType::F16),
                      preset_nvfp4("qwen3-30b", 32, 1.0f, DType::F16),
                      Nvfp4Case{"odd-k-tail-bf16", 2080, 96, 8, 2, ActivationConfig::silu_mul(), true, 1.0f, DType::BF16},
                      Nvfp4Case{"odd-k-tail-f16", 2080, 96, 8, 2, ActivationConfig::silu_mul(), true, 1.0f, DType::F16}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

TEST(Nvfp4Layer, MxFp4WithFp16ActivationsIsRefusedWithAReason) {
  MXMOE_REQUIRE_HOPPER();
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 256;
  spec.inter = 128;
  CanonicalMoeWeights w = make_synthetic_weights(spec);
  w.format.activation_dtype = DType::F16;
  expect_error([&] { MoeLayer bad(w, {8, 2, ActivationConfig::silu_mul(), 0}); }, "bf16");
}

}  // namespace
