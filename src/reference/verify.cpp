#include "mxmoe/verify.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "formats/fp16.hpp"

namespace mxmoe::verify {
namespace {

double widen(std::uint16_t bf16) { return formats::bf16_to_float(bf16); }
double widen(double v) { return v; }

// The one implementation of the metric; the overloads differ only in how elements widen.
template <class Got, class Want>
Comparison compare_impl(const Got* got, const Want* want, std::size_t n) {
  Comparison c;
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = widen(got[i]), w = widen(want[i]);
    if (!std::isfinite(g) || !std::isfinite(w)) {
      c.finite = false;
      continue;
    }
    const double d = g - w;
    diff += d * d;
    norm += w * w;
    c.max_abs_error = std::max(c.max_abs_error, std::fabs(d));
    c.max_abs_want = std::max(c.max_abs_want, std::fabs(w));
  }
  if (!c.finite) c.relative_error = INFINITY;
  else if (norm == 0.0) c.relative_error = diff == 0.0 ? 0.0 : INFINITY;
  else c.relative_error = std::sqrt(diff / norm);
  return c;
}

}  // namespace

Comparison compare(const std::uint16_t* got, const std::uint16_t* want, std::size_t n) { return compare_impl(got, want, n); }
Comparison compare(const std::uint16_t* got, const double* want, std::size_t n) { return compare_impl(got, want, n); }
Comparison compare(const double* got, const double* want, std::size_t n) { return compare_impl(got, want, n); }

std::vector<int> spread_rows(int tokens, int n) {
  std::vector<int> rows;
  if (tokens <= n) {
    for (int t = 0; t < tokens; ++t) rows.push_back(t);
    return rows;
  }
  if (n == 1) return {tokens - 1};
  for (int i = 0; i < n; ++i) rows.push_back(static_cast<int>(static_cast<long long>(i) * (tokens - 1) / (n - 1)));
  return rows;
}

TopK take_rows(const TopK& topk, const std::vector<int>& rows) {
  TopK out;
  out.num_tokens = static_cast<int>(rows.size());
  out.top_k = topk.top_k;
  const std::size_t k = static_cast<std::size_t>(topk.top_k);
  for (int r : rows) {
    out.ids.insert(out.ids.end(), topk.ids.begin() + r * k, topk.ids.begin() + (r + 1) * k);
    out.weights.insert(out.weights.end(), topk.weights.begin() + r * k, topk.weights.begin() + (r + 1) * k);
  }
  return out;
}

std::vector<std::uint16_t> random_hidden(int tokens, int hidden, std::uint64_t seed, double std) {
  SplitMix64 rng(seed);
  std::vector<std::uint16_t> x(static_cast<std::size_t>(tokens) * hidden);
  for (auto& v : x) v = formats::float_to_bf16(static_cast<float>(rng.normal() * std));
  return x;
}

std::vector<std::uint16_t> random_hidden(int tokens, int hidden, std::uint64_t seed, double std, DType dtype) {
  std::vector<std::uint16_t> x = random_hidden(tokens, hidden, seed, std);
  if (dtype == DType::F16)
    for (auto& v : x) v = formats::float_to_fp16(formats::bf16_to_float(v));
  else if (dtype != DType::BF16)
    fail(ErrorCode::DType, std::string("verify::random_hidden: activations are bf16 or fp16, got ") + dtype_name(dtype));
  return x;
}

namespace {
std::vector<double> widen_bits(const std::vector<std::uint16_t>& bits, DType dtype) {
  std::vector<double> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i)
    out[i] = dtype == DType::F16 ? formats::fp16_to_float(bits[i]) : formats::bf16_to_float(bits[i]);
  return out;
}
}  // namespace

Comparison compare(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& want, DType dtype) {
  return compare(widen_bits(got, dtype), widen_bits(want, dtype));
}
Comparison compare(const std::vector<std::uint16_t>& got, const std::vector<double>& want, DType dtype) {
  return compare(widen_bits(got, dtype), want);
}

std::vector<float> random_logits(int tokens, int num_experts, std::uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<float> logits(static_cast<std::size_t>(tokens) * num_experts);
  for (auto& v : logits) v = static_cast<float>(rng.normal());
  return logits;
}

TopK random_topk(int tokens, int num_experts, int top_k, std::uint64_t seed, const TopKMask& mask) {
  if (top_k < 1 || top_k > num_experts)
    fail(ErrorCode::InvalidArgument, "verify: random_topk needs top_k in 1.." + std::to_string(num_experts) + ", got " +
                                         std::to_string(top_k));
  SplitMix64 rng(seed);
  TopK t;
  t.num_tokens = tokens;
  t.top_k = top_k;
  std::vector<int> chosen;
  for (int i = 0; i < tokens; ++i) {
    chosen.clear();
    while (static_cast<int>(chosen.size()) < top_k) {  // rejection keeps the draws simple and uniform
      const int e = static_cast<int>(rng.next() % static_cast<std::uint64_t>(num_experts));
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    for (int s = 0; s < top_k; ++s) {
      int id = chosen[s];
      if (s == mask.slot && i % mask.every == mask.phase) id = -1;
      if (mask.experts_from >= 0 && id >= mask.experts_from) id = -1;
      t.weights.push_back(static_cast<float>(0.1 + rng.uniform()));
      // Drawn only when asked, so a mask without drops leaves the stream (and the inputs) unchanged.
      if (mask.drop > 0.0 && rng.uniform() < mask.drop) id = -1;
      t.ids.push_back(id);
    }
  }
  return t;
}

}  // namespace mxmoe::verify
