// The oracle on NVFP4 weights (group 16, UE4M3 block scales, a global scale per matrix applied to
// the fp32 dot product before the bias) and on fp16 activations: reference::moe_forward and
// moe_forward_f64 against a float64 model written here from the definitions (its own E2M1 and
// UE4M3 decode, its own fp16 decode), on fresh random data. Tolerance as in
// test_reference_forward.cpp: the oracle rounds the intermediate and the output to the activation
// dtype (bf16: unit roundoff 2^-9; fp16: 2^-12), so < 1e-2 (bf16) and < 2e-3 (fp16) norm-wise; a
// wrong global column, scale decode or dtype moves the error to O(1). NaN never passes (the metric
// makes it +inf).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/bf16.hpp"
#include "formats/fp16.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "mxmoe/weights.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using mxmoe::test::e2m1_value;
using mxmoe::test::e4m3_value;  // UE4M3 scales are E4M3 bytes 0..0x7E

namespace {

double half_value(std::uint16_t h) {
  const int exp = (h >> 10) & 31, man = h & 1023;
  const double mag = exp == 0 ? man * std::pow(2.0, -24) : (1.0 + man / 1024.0) * std::pow(2.0, exp - 15);
  return (h & 0x8000) ? -mag : mag;
}
double act_value(std::uint16_t bits, DType dtype) { return dtype == DType::F16 ? half_value(bits) : formats::bf16_to_float(bits); }

// Row r of expert e of an NVFP4 matrix [E, rows, K/2] with scales [E, rows, K/16], times `global`.
std::vector<double> nv_row(const HostTensor& packed, const HostTensor& scales, int e, int rows, int r, int K, double global) {
  std::vector<double> out(static_cast<std::size_t>(K));
  const std::size_t row = static_cast<std::size_t>(e) * rows + r;
  for (int c = 0; c < K; ++c) {
    const std::uint8_t byte = packed.as<std::uint8_t>()[row * K / 2 + c / 2];
    out[c] = e2m1_value(c % 2 ? byte >> 4 : byte & 15u) * e4m3_value(scales.as<std::uint8_t>()[row * K / 16 + c / 16]) * global;
  }
  return out;
}

// The float64 model: y = sum_s weight_s (W2_e silu(gate) up + b2), gate/up = W13_e x + b13; no rounding.
std::vector<double> model(const CanonicalMoeWeights& w, const std::vector<std::uint16_t>& hidden, const TopK& topk, int t) {
  const int H = w.hidden, I = w.inter, k = topk.top_k;
  const DType dt = w.format.activation_dtype;
  std::vector<double> out(static_cast<std::size_t>(H), 0.0);
  for (int s = 0; s < k; ++s) {
    const int e = topk.ids[static_cast<std::size_t>(t) * k + s];
    if (e < 0) continue;
    std::vector<double> a(static_cast<std::size_t>(I));
    for (int i = 0; i < I; ++i) {
      double gu[2];
      for (int half = 0; half < 2; ++half) {
        const int r = half * I + i;
        const auto row = nv_row(w.w13, w.w13_scale, e, 2 * I, r, H, w.w13_global_scale->as<float>()[2 * e + half]);
        double sum = w.w13_bias ? w.w13_bias->as<float>()[static_cast<std::size_t>(e) * 2 * I + r] : 0.0;
        for (int h = 0; h < H; ++h) sum += row[h] * act_value(hidden[static_cast<std::size_t>(t) * H + h], dt);
        gu[half] = sum;
      }
      a[i] = gu[0] / (1.0 + std::exp(-gu[0])) * gu[1];
    }
    for (int h = 0; h < H; ++h) {
      const auto row = nv_row(w.w2, w.w2_scale, e, H, h, I, w.w2_global_scale->as<float>()[e]);
      double sum = w.w2_bias ? w.w2_bias->as<float>()[static_cast<std::size_t>(e) * H + h] : 0.0;
      for (int i = 0; i < I; ++i) sum += row[i] * a[i];
      out[h] += topk.weights[static_cast<std::size_t>(t) * k + s] * sum;
    }
  }
  return out;
}

double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return INFINITY;
    d += (got[i] - want[i]) * (got[i] - want[i]);
    n += want[i] * want[i];
  }
  return n > 0 ? std::sqrt(d / n) : (d == 0 ? 0 : INFINITY);
}

struct Case {
  CanonicalMoeWeights w;
  std::vector<std::uint16_t> hidden;
  TopK topk;
};

Case make_case(DType dtype, std::uint64_t seed, int T) {
  SyntheticSpec spec;
  spec.num_experts = 6;
  spec.hidden = 80;  // 5 groups of 16: not a multiple of 32
  spec.inter = 48;
  spec.with_biases = true;
  spec.weight_std = 0.05f;
  spec.seed = seed;
  spec.format = WeightFormat::nvfp4_with(dtype);
  Case c{make_synthetic_weights(spec), verify::random_hidden(T, spec.hidden, seed + 1), {}};
  if (dtype == DType::F16)  // the same values as fp16 bits (fp16 holds these bf16 values exactly)
    for (auto& b : c.hidden) b = formats::float_to_fp16(formats::bf16_to_float(b));
  const auto logits = verify::random_logits(T, spec.num_experts, seed + 2);
  c.topk = reference::route(logits.data(), T, spec.num_experts, RoutingConfig::softmax(3, true), nullptr);
  c.topk.ids[1] = -1;  // a skipped slot
  return c;
}

// HostTensor copies share their bytes: a copy of the weights to spoil needs its own.
HostTensor own(const HostTensor& t) {
  HostTensor o = HostTensor::zeros(t.dtype(), t.shape());
  std::memcpy(o.mutable_data(), t.data(), t.nbytes());
  return o;
}
CanonicalMoeWeights deep_copy(const CanonicalMoeWeights& w) {
  CanonicalMoeWeights c = w;
  c.w13_scale = own(w.w13_scale);
  c.w13_global_scale = own(*w.w13_global_scale);
  c.w2_global_scale = own(*w.w2_global_scale);
  return c;
}

}  // namespace

TEST(Nvfp4Reference, Fp32AndFloat64OraclesMatchTheModelInBothActivationDtypes) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ActivationConfig act = ActivationConfig::silu_mul();
  for (DType dtype : {DType::BF16, DType::F16}) {
    const int T = 9;
    const Case c = make_case(dtype, seed, T);
    const auto out = reference::moe_forward(c.w, c.hidden.data(), T, c.topk, act);
    std::vector<int> tokens(T);
    for (int t = 0; t < T; ++t) tokens[t] = t;
    const auto f64 = reference::moe_forward_f64(c.w, c.hidden.data(), T, c.topk, act, tokens);
    std::vector<double> want, got;
    for (int t = 0; t < T; ++t) {
      const auto m = model(c.w, c.hidden, c.topk, t);
      want.insert(want.end(), m.begin(), m.end());
    }
    for (auto bits : out) got.push_back(act_value(bits, dtype));
    // The float64 oracle is the model up to summation order.
    EXPECT_LT(rel_err(f64, want), 1e-12) << dtype_name(dtype);
    const double err = rel_err(got, want);
    EXPECT_LT(err, dtype == DType::F16 ? 2e-3 : 1e-2) << dtype_name(dtype);
    EXPECT_GT(err, 0.0) << "the output is rounded to " << dtype_name(dtype);
    // Every output is its dtype's rounding of a value near the model (no bf16 bits read as fp16).
    double rms = 0;
    for (double v : want) rms += v * v;
    rms = std::sqrt(rms / want.size());
    ASSERT_GT(rms, 1e-3);
    for (std::size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 0.05 * rms) << dtype_name(dtype) << " element " << i;
  }
}

// The global scales are per matrix: doubling gate's global of one expert changes only that expert's
// gate rows, and is exactly the same as doubling every gate block scale (when UE4M3 holds it).
TEST(Nvfp4Reference, GlobalScalesActPerMatrixOnTheDotProduct) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ActivationConfig act = ActivationConfig::silu_mul();
  const int T = 5;
  Case c = make_case(DType::BF16, seed, T);
  for (auto& id : c.topk.ids) id = id < 0 ? -1 : 2;  // every pair on expert 2
  // Expert 2's gate block scales made normal UE4M3 (bytes 8..57), where +8 doubles the value exactly.
  std::mt19937 rng(static_cast<unsigned>(seed));
  auto* gate = c.w.w13_scale.mutable_as<std::uint8_t>() + static_cast<std::size_t>(2) * 2 * 48 * 5;
  for (int i = 0; i < 48 * 5; ++i) gate[i] = static_cast<std::uint8_t>(8 + rng() % 50);
  const auto base = reference::moe_forward(c.w, c.hidden.data(), T, c.topk, act);
  CanonicalMoeWeights by_global = deep_copy(c.w), by_scale = deep_copy(c.w);
  by_global.w13_global_scale->mutable_as<float>()[2 * 2 + 0] *= 2.0f;
  auto* s = by_scale.w13_scale.mutable_as<std::uint8_t>() + static_cast<std::size_t>(2) * 2 * 48 * 5;
  for (int i = 0; i < 48 * 5; ++i) s[i] = static_cast<std::uint8_t>(s[i] + 8);  // +1 in the exponent: x2
  const auto a = reference::moe_forward(by_global, c.hidden.data(), T, c.topk, act);
  const auto b = reference::moe_forward(by_scale, c.hidden.data(), T, c.topk, act);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, base);
  // The up column and w2's global are apart from the gate's.
  CanonicalMoeWeights up = deep_copy(c.w);
  up.w13_global_scale->mutable_as<float>()[2 * 2 + 1] *= 2.0f;
  EXPECT_NE(reference::moe_forward(up, c.hidden.data(), T, c.topk, act), a);
  // Another expert's globals do not matter here.
  CanonicalMoeWeights other = deep_copy(c.w);
  other.w13_global_scale->mutable_as<float>()[0] *= 3.0f;
  other.w2_global_scale->mutable_as<float>()[5] *= 3.0f;
  EXPECT_EQ(reference::moe_forward(other, c.hidden.data(), T, c.topk, act), base);
}

TEST(Nvfp4Reference, RouterLogitsReadFp16HiddenStates) {
  const std::uint64_t seed = std::random_device{}();
  const Case b = make_case(DType::BF16, seed, 7), f = make_case(DType::F16, seed, 7);
  const auto lb = reference::router_logits(b.w, b.hidden.data(), 7);
  const auto lf = reference::router_logits(f.w, f.hidden.data(), 7);
  EXPECT_EQ(lb, lf);  // the same values, read from their own dtypes
  CanonicalMoeWeights wrong = f.w;
  wrong.format.activation_dtype = DType::BF16;
  EXPECT_NE(reference::router_logits(wrong, f.hidden.data(), 7), lf);
}
