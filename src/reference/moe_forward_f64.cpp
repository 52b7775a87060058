// The float64 twin of moe_forward, written separately (own decode, plain loops, no rounding) so
// the two can check each other. Slots of one token are computed in parallel.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/activation.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"
#include "reference/forward_inputs.hpp"
#include "reference/parallel.hpp"

namespace mxmoe::reference {
namespace {

// E2M1 nibble: sign bit 3, magnitude index bits 0..2 into {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
double decode_e2m1(unsigned nibble) {
  static const double magnitude[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  const double m = magnitude[nibble & 7u];
  return (nibble & 8u) ? -m : m;
}

// UE4M3 (E4M3, sign bit clear; validate refused the rest): bias 7, subnormals man/8 x 2^-6.
double decode_ue4m3(unsigned b) {
  const int exp = static_cast<int>((b >> 3) & 15u), man = static_cast<int>(b & 7u);
  return exp == 0 ? std::ldexp(man / 8.0, -6) : std::ldexp(1.0 + man / 8.0, exp - 7);
}

// Row `row` of a matrix with K columns, decoded to double: groups of `group` (32: E8M0 scales 2^(b-127);
// 16: UE4M3 scales, without NVFP4's global scale, which multiplies the row's dot product).
void decode_row(const std::uint8_t* packed, const std::uint8_t* scales, std::size_t row, int K, int group, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(K));
  for (int block = 0; block < K / group; ++block) {
    const unsigned byte = scales[row * static_cast<std::size_t>(K / group) + static_cast<std::size_t>(block)];
    const double scale = group == 16 ? decode_ue4m3(byte) : std::ldexp(1.0, static_cast<int>(byte) - 127);
    for (int col = block * group; col < block * group + group; ++col) {
      const std::uint8_t byte = packed[row * (K / 2) + col / 2];
      const unsigned nibble = (col % 2 == 0) ? (byte & 0x0fu) : (byte >> 4);
      out[static_cast<std::size_t>(col)] = decode_e2m1(nibble) * scale;
    }
  }
}

double bf16_value(std::uint16_t bits) {
  const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16 bits, decoded from the definition.
double fp16_value(std::uint16_t bits) {
  const int exp = (bits >> 10) & 31, man = bits & 1023;
  const double mag = exp == 31 ? (man ? NAN : INFINITY) : exp == 0 ? std::ldexp(man, -24) : std::ldexp(1.0 + man / 1024.0, exp - 15);
  return (bits & 0x8000u) ? -mag : mag;
}

// One expert applied to one token's input x [H]: returns y [H] (bias included, not weighted).
// With `dense`, the rows are its float32 rows instead of decoded MXFP4/NVFP4 ones. NVFP4: each row's
// dot product is multiplied by its matrix's global scale (gate, up: w13_global_scale [e, 0], [e, 1];
// down: w2_global_scale [e]) before the bias.
std::vector<double> expert_f64(const CanonicalMoeWeights& w, const DenseExpertWeights* dense, int e, const std::vector<double>& x,
                               const ActivationConfig& act) {
  const int H = w.hidden, I = w.inter;
  const auto* w13 = w.w13.as<std::uint8_t>();
  const auto* s13 = w.w13_scale.as<std::uint8_t>();
  const auto* w2 = w.w2.as<std::uint8_t>();
  const auto* s2 = w.w2_scale.as<std::uint8_t>();
  const int group = w.format.group_size;
  const bool global = !dense && w.format.nvfp4();
  std::vector<double> gate_up(static_cast<std::size_t>(2 * I)), wrow;
  for (int r = 0; r < 2 * I; ++r) {
    const std::size_t row = static_cast<std::size_t>(e) * 2 * I + r;
    if (dense) wrow.assign(dense->w13.as<float>() + row * H, dense->w13.as<float>() + (row + 1) * H);
    else decode_row(w13, s13, row, H, group, wrow);
    const double bias = w.w13_bias ? w.w13_bias->as<float>()[row] : 0.0;
    double sum = global ? 0.0 : bias;  // MXFP4 and dense: the bias starts the sum, as it always has
    for (int h = 0; h < H; ++h) sum += wrow[static_cast<std::size_t>(h)] * x[static_cast<std::size_t>(h)];
    if (global) sum = sum * w.w13_global_scale->as<float>()[2 * e + (r < I ? 0 : 1)] + bias;
    gate_up[static_cast<std::size_t>(r)] = sum;
  }
  std::vector<double> a(static_cast<std::size_t>(I));
  for (int i = 0; i < I; ++i) a[static_cast<std::size_t>(i)] = activate(act, gate_up[static_cast<std::size_t>(i)], gate_up[static_cast<std::size_t>(I + i)]);
  std::vector<double> y(static_cast<std::size_t>(H));
  for (int h = 0; h < H; ++h) {
    const std::size_t row = static_cast<std::size_t>(e) * H + h;
    if (dense) wrow.assign(dense->w2.as<float>() + row * I, dense->w2.as<float>() + (row + 1) * I);
    else decode_row(w2, s2, row, I, group, wrow);
    const double bias = w.w2_bias ? w.w2_bias->as<float>()[row] : 0.0;
    double sum = global ? 0.0 : bias;
    for (int i = 0; i < I; ++i) sum += wrow[static_cast<std::size_t>(i)] * a[static_cast<std::size_t>(i)];
    if (global) sum = sum * w.w2_global_scale->as<float>()[e] + bias;
    y[static_cast<std::size_t>(h)] = sum;
  }
  return y;
}

std::vector<double> forward_f64(const CanonicalMoeWeights& w, const DenseExpertWeights* dense, const std::uint16_t* hidden,
                                int num_tokens, const TopK& topk, const ActivationConfig& act, const std::vector<int>& token_indices,
                                int threads) {
  detail::validate_forward_inputs("reference::moe_forward_f64", w, hidden, num_tokens, topk, act);
  for (std::size_t j = 0; j < token_indices.size(); ++j)
    if (token_indices[j] < 0 || token_indices[j] >= num_tokens)
      fail(ErrorCode::InvalidArgument, "reference::moe_forward_f64: token_indices[" + std::to_string(j) + "] = " +
                                           std::to_string(token_indices[j]) + " is outside 0.." + std::to_string(num_tokens - 1));
  const int H = w.hidden, k = topk.top_k;
  const std::size_t n = token_indices.size();
  // y of every (listed token, slot), computed in parallel, then summed per token in slot order.
  std::vector<std::vector<double>> y(n * static_cast<std::size_t>(k));
  detail::parallel_for(static_cast<std::int64_t>(y.size()), detail::resolve_threads(threads), [&](std::int64_t task, int) {
    const int t = token_indices[static_cast<std::size_t>(task) / k];
    const std::size_t slot = static_cast<std::size_t>(t) * k + static_cast<std::size_t>(task) % k;
    if (topk.ids[slot] < 0) return;
    std::vector<double> x(static_cast<std::size_t>(H));
    for (int h = 0; h < H; ++h) {
      const std::uint16_t bits = hidden[static_cast<std::size_t>(t) * H + h];
      x[static_cast<std::size_t>(h)] = w.format.activation_dtype == DType::F16 ? fp16_value(bits) : bf16_value(bits);
    }
    y[static_cast<std::size_t>(task)] = expert_f64(w, dense, topk.ids[slot], x, act);
  });
  std::vector<double> out(n * static_cast<std::size_t>(H), 0.0);
  for (std::size_t j = 0; j < n; ++j)
    for (int s = 0; s < k; ++s) {
      const std::vector<double>& ys = y[j * k + static_cast<std::size_t>(s)];
      if (ys.empty()) continue;
      const double wt = topk.weights[static_cast<std::size_t>(token_indices[j]) * k + s];
      for (int h = 0; h < H; ++h) out[j * H + h] += wt * ys[static_cast<std::size_t>(h)];
    }
  return out;
}

}  // namespace

std::vector<double> moe_forward_f64(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                    const TopK& topk, const ActivationConfig& act, const std::vector<int>& token_indices,
                                    int threads) {
  return forward_f64(w, nullptr, hidden, num_tokens, topk, act, token_indices, threads);
}

std::vector<double> moe_forward_f64(const CanonicalMoeWeights& w, const DenseExpertWeights& dense, const std::uint16_t* hidden,
                                    int num_tokens, const TopK& topk, const ActivationConfig& act,
                                    const std::vector<int>& token_indices, int threads) {
  const std::int64_t E = w.num_experts, H = w.hidden, I = w.inter;
  if (dense.w13.dtype() != DType::F32 || dense.w13.shape() != Shape{E, 2 * I, H} || dense.w2.dtype() != DType::F32 ||
      dense.w2.shape() != Shape{E, H, I})
    fail(ErrorCode::Shape, "reference::moe_forward_f64: dense weights must be F32 w13 " + shape_str({E, 2 * I, H}) + " and w2 " +
                               shape_str({E, H, I}) + ", got " + dtype_name(dense.w13.dtype()) + " " + shape_str(dense.w13.shape()) +
                               " and " + dtype_name(dense.w2.dtype()) + " " + shape_str(dense.w2.shape()));
  return forward_f64(w, &dense, hidden, num_tokens, topk, act, token_indices, threads);
}

}  // namespace mxmoe::reference
