// The W4A8 weight fold; the rule and its exactness argument are in w4a8_fold.hpp.
#include "prepare/w4a8_fold.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "formats/e4m3.hpp"
#include "formats/mxfp4.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::w4a8 {
namespace {

constexpr int kGroup = formats::kMxfp4Group;
constexpr int kExactShifts = kMaxShift - kMinExactShift + 1;  // 15

// fold_element for every code and every exact shift, built once.
const std::array<std::array<std::uint8_t, 16>, kExactShifts>& exact_table() {
  static const auto table = [] {
    std::array<std::array<std::uint8_t, 16>, kExactShifts> t{};
    for (int s = 0; s < kExactShifts; ++s)
      for (int c = 0; c < 16; ++c) t[s][c] = fold_element(static_cast<std::uint8_t>(c), s + kMinExactShift);
    return t;
  }();
  return table;
}

W4a8FoldCounts matrix_counts(const HostTensor& packed, const HostTensor& scales, std::int64_t rows, std::int64_t k) {
  return count_fold(packed.as<std::uint8_t>(), scales.as<std::uint8_t>(), rows, k);
}

}  // namespace

std::uint8_t fold_element(std::uint8_t code, int shift) { return formats::e4m3_of_e2m1(code, shift); }

int fold_row(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t k, std::uint8_t* e4m3, W4a8FoldCounts* counts) {
  const int base = row_base(packed, scales, k);
  const auto& table = exact_table();
  for (std::int64_t g = 0; g < k / kGroup; ++g) {
    const std::uint8_t* p = packed + g * (kGroup / 2);
    const int shift = (static_cast<int>(scales[g]) - 127) - base;
    // A zero group's shift may be anything (the base ignores it): its elements are signed zeros. Every
    // other group has shift <= 6 by the base rule.
    const bool zero = zero_group(p), exact = zero || shift >= kMinExactShift;
    if (counts) {
      ++counts->groups;
      if (!exact) ++counts->requantized_groups;
    }
    if (exact && !e4m3) continue;
    for (int i = 0; i < kGroup; ++i) {
      const std::uint8_t code = (i & 1) ? static_cast<std::uint8_t>(p[i / 2] >> 4) : static_cast<std::uint8_t>(p[i / 2] & 0xfu);
      std::uint8_t byte;
      if (zero) {
        byte = static_cast<std::uint8_t>(code & 8u ? 0x80u : 0u);
      } else if (shift >= kMinExactShift) {
        byte = table[static_cast<std::size_t>(shift - kMinExactShift)][code];
      } else {
        byte = fold_element(code, shift);
        // In double, e2m1 x 2^shift is exact for every shift here (>= -254 - 6).
        if (counts && static_cast<double>(formats::e4m3_decode(byte)) != std::ldexp(static_cast<double>(formats::e2m1_decode(code)), shift))
          ++counts->changed_elements;
      }
      if (e4m3) e4m3[g * kGroup + i] = byte;
    }
  }
  return base;
}

FoldedMatrix fold_matrix(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t rows, std::int64_t k) {
  if (k <= 0 || k % kGroup != 0) fail(ErrorCode::Shape, "w4a8 fold: K must be a positive multiple of 32, got " + std::to_string(k));
  FoldedMatrix f;
  f.rows = rows;
  f.k = k;
  f.e4m3.resize(static_cast<std::size_t>(rows * k));
  f.base.resize(static_cast<std::size_t>(rows));
  for (std::int64_t n = 0; n < rows; ++n)
    f.base[static_cast<std::size_t>(n)] = fold_row(packed + n * (k / 2), scales + n * (k / kGroup), k, f.e4m3.data() + n * k, &f.counts);
  return f;
}

W4a8FoldCounts count_fold(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t rows, std::int64_t k) {
  if (k <= 0 || k % kGroup != 0) fail(ErrorCode::Shape, "w4a8 fold: K must be a positive multiple of 32, got " + std::to_string(k));
  W4a8FoldCounts c;
  for (std::int64_t n = 0; n < rows; ++n) fold_row(packed + n * (k / 2), scales + n * (k / kGroup), k, nullptr, &c);
  return c;
}

}  // namespace mxmoe::w4a8

namespace mxmoe {

W4a8FoldReport w4a8_fold_report(const CanonicalMoeWeights& w) {
  if (w.format.nvfp4())
    fail(ErrorCode::Unsupported, "W4A8 (FP8 activations) needs MXFP4 weights; these are NVFP4 (group 16, UE4M3 scales)");
  w.validate();
  const std::int64_t E = w.num_experts, H = w.hidden, I = w.inter;
  return {w4a8::matrix_counts(w.w13, w.w13_scale, E * 2 * I, H), w4a8::matrix_counts(w.w2, w.w2_scale, E * H, I)};
}

std::string describe_fold(const W4a8FoldCounts& c) {
  std::ostringstream o;
  const double pct = c.groups ? 100.0 * static_cast<double>(c.requantized_groups) / static_cast<double>(c.groups) : 0.0;
  o << c.requantized_groups << " of " << c.groups << " groups re-quantised (" << std::fixed
    << std::setprecision(pct > 0.0 && pct < 0.01 ? 6 : 2) << pct << "%), " << c.changed_elements << " element(s) changed";
  return o.str();
}

}  // namespace mxmoe
