// The fp32 oracle of the routed-experts forward. Work is grouped by expert: every weight row of
// an expert that some token uses is dequantised once per call (per token batch) and dotted with
// all the tokens routed to that expert. Three phases per batch of tokens:
//   A  (expert, block of w13 rows): h13[pair] = global13 (W13 x) + b13
//   B  (pair): a[pair] = act16(activation(gate, up))
//   C  (expert, block of w2 rows):  y[pair] = global2 (W2 a) + b2
// and the combine: out[t] = act16(sum over slots, in slot order, of weight * y[pair]).
// act16 rounds to the activation dtype (bf16; NVFP4 also fp16); the global scales are NVFP4's (1 for
// MXFP4, whose results stay bit-identical to the plain form).
// Every sum has a fixed order, so the result does not depend on the thread count.
// W4A8 (ActivationPrecision::Fp8PerToken, MXFP4 only): the inputs of A (each token's hidden row) and
// of C (each pair's intermediate, after its bf16 rounding) are quantised per row to E4M3 values with a
// row scale (formats::fp8_row_scale); each weight row is folded (prepare/w4a8_fold) to E4M3 values and
// a base exponent, inside the task that uses it (no folded copy is kept), and
//   out = ldexp(dot(e4m3 weights, e4m3 inputs) x row scale, base) (+ bias)
// with the dot product in fp32 as above.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/activation.hpp"
#include "formats/bf16.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"
#include "prepare/w4a8_fold.hpp"
#include "reference/forward_inputs.hpp"
#include "reference/moe_forward_batches.hpp"
#include "reference/parallel.hpp"
#include "reference/row_math.hpp"

namespace mxmoe::reference {
namespace {

constexpr int kRowsPerTask = 64;
// Scratch per token batch (h13, a, y in fp32) is kept near this many bytes.
constexpr std::size_t kBatchScratchBytes = std::size_t{256} << 20;

struct Problem {
  const CanonicalMoeWeights& w;
  const TopK& topk;
  const ActivationConfig& act;
  int E, H, I, k, workers;
  bool fp8;  // ActivationPrecision::Fp8PerToken
};

// Pairs (t * k + s, local to the batch) grouped by expert: pairs[begin[e] .. begin[e+1]).
struct ExpertPairs {
  std::vector<int> begin, pairs;
};

ExpertPairs group_by_expert(const Problem& p, int t0, int t1) {
  ExpertPairs g;
  g.begin.assign(static_cast<std::size_t>(p.E) + 1, 0);
  const std::int32_t* ids = p.topk.ids.data() + static_cast<std::size_t>(t0) * p.k;
  const int n = (t1 - t0) * p.k;
  for (int i = 0; i < n; ++i)
    if (ids[i] >= 0) ++g.begin[static_cast<std::size_t>(ids[i]) + 1];
  for (int e = 0; e < p.E; ++e) g.begin[e + 1] += g.begin[e];
  g.pairs.resize(static_cast<std::size_t>(g.begin[p.E]));
  std::vector<int> fill(g.begin.begin(), g.begin.end() - 1);
  for (int i = 0; i < n; ++i)
    if (ids[i] >= 0) g.pairs[static_cast<std::size_t>(fill[ids[i]]++)] = i;
  return g;
}

// out[pair][rows] = global . (W[e] rows . in[pair]) (+ bias[e][row]) for every (expert, row block)
// task. W is [E, rows, K/2] packed with scales [E, rows, K/group]; `in` has stride K, `out` stride
// `rows`. in_scale: null (bf16 inputs), or W4A8's row scale of each pair's input (`in` then holds
// E4M3 values, and the weight rows are folded; module comment). global: null, or `global_cols` fp32 per expert, the first half of the rows taking column
// 0 and the second half the last column (w13: gate, up; w2: one column).
void grouped_gemv(const Problem& p, const ExpertPairs& g, const std::uint8_t* packed, const std::uint8_t* scales,
                  const float* global, int global_cols, const float* bias, int rows, int K, const float* in, const float* in_scale,
                  float* out) {
  const int group = p.w.format.group_size;
  std::vector<int> experts;
  for (int e = 0; e < p.E; ++e)
    if (g.begin[e + 1] > g.begin[e]) experts.push_back(e);
  const int blocks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  std::vector<std::vector<float>> row_buf(static_cast<std::size_t>(p.workers), std::vector<float>(static_cast<std::size_t>(K)));
  std::vector<std::vector<std::uint8_t>> fold_buf(in_scale ? static_cast<std::size_t>(p.workers) : 0, std::vector<std::uint8_t>(static_cast<std::size_t>(K)));
  const float* e4m3 = detail::e4m3_table();
  detail::parallel_for(static_cast<std::int64_t>(experts.size()) * blocks, p.workers, [&](std::int64_t task, int worker) {
    const int e = experts[static_cast<std::size_t>(task / blocks)];
    const int r0 = static_cast<int>(task % blocks) * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
    float* row = row_buf[static_cast<std::size_t>(worker)].data();
    for (int r = r0; r < r1; ++r) {
      const std::size_t row_index = static_cast<std::size_t>(e) * rows + r;
      const float b = bias ? bias[row_index] : 0.0f;
      if (in_scale) {
        std::uint8_t* folded = fold_buf[static_cast<std::size_t>(worker)].data();
        const int base = w4a8::fold_row(packed + row_index * (K / 2), scales + row_index * (K / group), K, folded, nullptr);
        for (int i = 0; i < K; ++i) row[i] = e4m3[folded[i]];
        for (int i = g.begin[e]; i < g.begin[e + 1]; ++i) {
          const std::size_t pair = static_cast<std::size_t>(g.pairs[static_cast<std::size_t>(i)]);
          out[pair * rows + r] = std::ldexp(detail::dot(row, in + pair * K, K) * in_scale[pair], base) + b;
        }
        continue;
      }
      detail::dequantize_row(packed + row_index * (K / 2), scales + row_index * (K / group), K, group, row);
      const float gs = global ? global[static_cast<std::size_t>(e) * global_cols + (r < rows / 2 ? 0 : global_cols - 1)] : 1.0f;
      for (int i = g.begin[e]; i < g.begin[e + 1]; ++i) {
        const std::size_t pair = static_cast<std::size_t>(g.pairs[static_cast<std::size_t>(i)]);
        const float d = detail::dot(row, in + pair * K, K);
        out[pair * rows + r] = (global ? d * gs : d) + b;
      }
    }
  });
}

void forward_batch(const Problem& p, const std::uint16_t* hidden, int t0, int t1, std::uint16_t* out) {
  const int n_tok = t1 - t0, n_pairs = n_tok * p.k, H = p.H, I = p.I;
  const DType dtype = p.w.format.activation_dtype;
  const float* g13 = p.w.w13_global_scale ? p.w.w13_global_scale->as<float>() : nullptr;
  const float* g2 = p.w.w2_global_scale ? p.w.w2_global_scale->as<float>() : nullptr;
  const ExpertPairs g = group_by_expert(p, t0, t1);

  // Each pair's input is its token's hidden row, widened to fp32 (copied per pair for a simple stride).
  std::vector<float> x(static_cast<std::size_t>(n_pairs) * H);
  for (int i = 0; i < n_pairs; ++i)
    for (int h = 0; h < H; ++h)
      x[static_cast<std::size_t>(i) * H + h] = detail::act_to_float(hidden[static_cast<std::size_t>(t0 + i / p.k) * H + h], dtype);

  // W4A8: each token's row quantised once, its pairs sharing the values (copied above) and the scale.
  std::vector<float> x_scale;
  if (p.fp8) {
    x_scale.resize(static_cast<std::size_t>(n_pairs));
    for (int t = 0; t < n_tok; ++t) {
      float* row0 = x.data() + static_cast<std::size_t>(t) * p.k * H;
      const float sc = detail::fp8_quantize_row(row0, H);
      for (int s = 0; s < p.k; ++s) {
        if (s > 0) std::copy(row0, row0 + H, row0 + static_cast<std::size_t>(s) * H);
        x_scale[static_cast<std::size_t>(t) * p.k + s] = sc;
      }
    }
  }

  const float* b13 = p.w.w13_bias ? p.w.w13_bias->as<float>() : nullptr;
  const float* b2 = p.w.w2_bias ? p.w.w2_bias->as<float>() : nullptr;
  std::vector<float> h13(static_cast<std::size_t>(n_pairs) * 2 * I);
  grouped_gemv(p, g, p.w.w13.as<std::uint8_t>(), p.w.w13_scale.as<std::uint8_t>(), g13, 2, b13, 2 * I, H, x.data(),
               p.fp8 ? x_scale.data() : nullptr, h13.data());

  std::vector<float> a(static_cast<std::size_t>(n_pairs) * I), a_scale(p.fp8 ? static_cast<std::size_t>(n_pairs) : 0);
  detail::parallel_for(static_cast<std::int64_t>(g.pairs.size()), p.workers, [&](std::int64_t i, int) {
    const std::size_t pair = static_cast<std::size_t>(g.pairs[static_cast<std::size_t>(i)]);
    const float* gu = h13.data() + pair * 2 * I;
    float* ap = a.data() + pair * I;
    for (int j = 0; j < I; ++j) ap[j] = detail::act_to_float(detail::float_to_act(activate(p.act, gu[j], gu[I + j]), dtype), dtype);
    if (p.fp8) a_scale[pair] = detail::fp8_quantize_row(ap, I);  // W4A8: the bf16 intermediate, per (token, slot) row
  });

  std::vector<float> y(static_cast<std::size_t>(n_pairs) * H);
  grouped_gemv(p, g, p.w.w2.as<std::uint8_t>(), p.w.w2_scale.as<std::uint8_t>(), g2, 1, b2, H, I, a.data(),
               p.fp8 ? a_scale.data() : nullptr, y.data());

  std::vector<float> acc(static_cast<std::size_t>(H));
  for (int t = 0; t < n_tok; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int s = 0; s < p.k; ++s) {
      const std::size_t slot = static_cast<std::size_t>(t0 + t) * p.k + s;
      if (p.topk.ids[slot] < 0) continue;
      const float wt = p.topk.weights[slot];
      const float* ys = y.data() + static_cast<std::size_t>(t * p.k + s) * H;
      for (int h = 0; h < H; ++h) acc[h] += wt * ys[h];
    }
    for (int h = 0; h < H; ++h) out[static_cast<std::size_t>(t0 + t) * H + h] = detail::float_to_act(acc[h], dtype);
  }
}

}  // namespace

std::vector<std::uint16_t> detail::moe_forward_in_batches(const CanonicalMoeWeights& w, const std::uint16_t* hidden,
                                                          int num_tokens, const TopK& topk, const ActivationConfig& act,
                                                          int threads, std::size_t scratch_bytes, ActivationPrecision precision) {
  detail::validate_forward_inputs("reference::moe_forward", w, hidden, num_tokens, topk, act);
  const bool fp8 = precision == ActivationPrecision::Fp8PerToken;
  if (fp8 && w.format.nvfp4())
    fail(ErrorCode::Unsupported,
         "reference::moe_forward: FP8 activations (W4A8, ActivationPrecision::Fp8PerToken) need MXFP4 weights; these are NVFP4");
  const Problem p{w, topk, act, w.num_experts, w.hidden, w.inter, topk.top_k, detail::resolve_threads(threads), fp8};
  std::vector<std::uint16_t> out(static_cast<std::size_t>(num_tokens) * p.H);
  const std::size_t bytes_per_token = static_cast<std::size_t>(p.k) * (2 * p.H + 3 * p.I) * sizeof(float);
  const int batch = static_cast<int>(std::min<std::size_t>(std::max<std::size_t>(1, scratch_bytes / bytes_per_token), 1 << 30));
  for (int t0 = 0; t0 < num_tokens; t0 += batch)
    forward_batch(p, hidden, t0, std::min(num_tokens, t0 + batch), out.data());
  return out;
}

std::vector<std::uint16_t> moe_forward(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                       const TopK& topk, const ActivationConfig& act, int threads) {
  return detail::moe_forward_in_batches(w, hidden, num_tokens, topk, act, threads, kBatchScratchBytes, ActivationPrecision::Bf16);
}

std::vector<std::uint16_t> moe_forward(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                       const TopK& topk, const ActivationConfig& act, ActivationPrecision precision, int threads) {
  return detail::moe_forward_in_batches(w, hidden, num_tokens, topk, act, threads, kBatchScratchBytes, precision);
}

}  // namespace mxmoe::reference
