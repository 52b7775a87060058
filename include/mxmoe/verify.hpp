// The verification toolkit every check of mxmoe uses (the CLI's demo/verify/bench, the bench's
// baseline check, every test): one comparison metric with one NaN rule, and reproducible random
// inputs (hidden states, router logits, top-k routing with masks) from one generator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"

namespace mxmoe::verify {

// got against want, element by element. The one NaN rule: a NaN or an infinity on either side makes
// `finite` false and relative_error +infinity, so no tolerance ever passes it (`err < tol` and
// `err <= tol` are both false). A want of all zeros gives 0 when got is all zeros too, else +inf.
struct Comparison {
  double relative_error = 0.0;  // ||got - want||_2 / ||want||_2 (relative Frobenius norm)
  double max_abs_error = 0.0;   // max |got - want|
  double max_abs_want = 0.0;    // max |want|, the scale max_abs_error is read against
  bool finite = true;
};

// bf16 elements are raw bit patterns (std::uint16_t), widened exactly to double.
Comparison compare(const std::uint16_t* got_bf16, const std::uint16_t* want_bf16, std::size_t n);
Comparison compare(const std::uint16_t* got_bf16, const double* want, std::size_t n);
Comparison compare(const double* got, const double* want, std::size_t n);

// 16-bit activations of either dtype (DType::BF16 or DType::F16 bits), widened exactly: the GPU's
// and the oracle's outputs of a layer with fp16 activations compare through this one.
Comparison compare(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& want, DType dtype);
Comparison compare(const std::vector<std::uint16_t>& got, const std::vector<double>& want, DType dtype);

// The vectors must have the same length (mxmoe::Error InvalidArgument otherwise).
template <class Got, class Want>
Comparison compare(const std::vector<Got>& got, const std::vector<Want>& want) {
  if (got.size() != want.size())
    fail(ErrorCode::InvalidArgument, "verify: comparing " + std::to_string(got.size()) + " values against " +
                                         std::to_string(want.size()));
  return compare(got.data(), want.data(), got.size());
}
template <class Got, class Want>
double relative_error(const std::vector<Got>& got, const std::vector<Want>& want) {
  return compare(got, want).relative_error;
}

// Checking a sample of a batch: which tokens, and their rows of a [tokens, width] row-major matrix or
// of a routing, in the listed order.
// At most n token indices spread evenly over 0..tokens-1, the first and the last included (all of
// them when tokens <= n).
std::vector<int> spread_rows(int tokens, int n);
template <class T>
std::vector<T> take_rows(const std::vector<T>& matrix, int width, const std::vector<int>& rows) {
  std::vector<T> out;
  out.reserve(rows.size() * static_cast<std::size_t>(width));
  for (int r : rows) {
    const auto first = matrix.begin() + static_cast<std::ptrdiff_t>(r) * width;
    out.insert(out.end(), first, first + width);
  }
  return out;
}
TopK take_rows(const TopK& topk, const std::vector<int>& rows);

// Random inputs. One generator (SplitMix64, the synthetic weights' generator), so a seed gives the
// same inputs on every machine; the argument order is always (shape..., seed, options).

// bf16 hidden states [tokens, hidden], normal(0, std); with `dtype` F16 the same values as fp16 bits
// (each bf16 value rounded to the nearest fp16: exact inside fp16's normal range).
std::vector<std::uint16_t> random_hidden(int tokens, int hidden, std::uint64_t seed, double std = 1.0);
std::vector<std::uint16_t> random_hidden(int tokens, int hidden, std::uint64_t seed, double std, DType dtype);

// fp32 router logits [tokens, num_experts], normal(0, 1).
std::vector<float> random_logits(int tokens, int num_experts, std::uint64_t seed);

// Which routed ids random_topk turns into -1 ("not on this rank" / dropped); each rule is off by
// default and they combine.
struct TopKMask {
  int slot = -1;          // slot `slot` of every token t with t % every == phase
  int every = 1, phase = 0;
  int experts_from = -1;  // every id >= experts_from (the experts of another expert-parallel rank)
  double drop = 0.0;      // any pair, with this probability

  static TopKMask slot_of_every(int slot, int every, int phase = 0) {
    TopKMask m;
    m.slot = slot;
    m.every = every;
    m.phase = phase;
    return m;
  }
  static TopKMask experts_from_id(int first) {
    TopKMask m;
    m.experts_from = first;
    return m;
  }
  static TopKMask dropping(double probability) {
    TopKMask m;
    m.drop = probability;
    return m;
  }
};

// k distinct experts per token (uniform), weights uniform in [0.1, 1.1) (not normalised), then the
// mask applied. Throws mxmoe::Error when top_k is outside 1..num_experts.
TopK random_topk(int tokens, int num_experts, int top_k, std::uint64_t seed, const TopKMask& mask = {});

}  // namespace mxmoe::verify
