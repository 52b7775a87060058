// The per-row E8M0 shift of Mxfp4Shifted (prepare/scale_shift.hpp).
#include "prepare/scale_shift.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/dequant.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::prepare {

float shift_factor(int d) {
  if (d < 0 || d > 127) fail(ErrorCode::InvalidArgument, "E8M0 shift must be in 0..127, got " + std::to_string(d));
  const std::uint32_t bits = static_cast<std::uint32_t>(d + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

std::vector<float> E8m0Shifts::w13_factors() const {
  std::vector<float> f(w13.size());
  std::transform(w13.begin(), w13.end(), f.begin(), [](std::uint8_t d) { return shift_factor(d); });
  return f;
}

std::vector<float> E8m0Shifts::w2_factors() const {
  std::vector<float> f(w2.size());
  std::transform(w2.begin(), w2.end(), f.begin(), [](std::uint8_t d) { return shift_factor(d); });
  return f;
}

E8m0Shifts e8m0_shifts(const std::uint8_t* w13_scale, const std::uint8_t* w2_scale, int num_experts, int hidden, int inter) {
  if (num_experts <= 0 || hidden <= 0 || inter <= 0 || hidden % 32 || inter % 32)
    fail(ErrorCode::Shape, "E8M0 shifts: E, H, I must be positive and H, I multiples of 32, got E=" + std::to_string(num_experts) +
                               " H=" + std::to_string(hidden) + " I=" + std::to_string(inter));
  E8m0Shifts s;
  s.num_experts = num_experts;
  s.hidden = hidden;
  s.inter = inter;
  // Every row of one matrix: `rows` rows of `groups` bytes; records each row's shift and folds the
  // row into the summary.
  auto matrix = [&s](const std::uint8_t* p, std::int64_t rows, int groups, std::uint8_t* shifts) {
    for (std::int64_t r = 0; r < rows; ++r, p += groups) {
      int m = 0, lo = 255;
      for (int i = 0; i < groups; ++i) {
        m = std::max<int>(m, p[i]);
        lo = std::min<int>(lo, p[i]);
      }
      s.summary.max_byte = std::max(s.summary.max_byte, m);
      if (m > kernels::kMaxFastScaleByte) s.summary.max_shifted_span = std::max(s.summary.max_shifted_span, m - lo);
      shifts[r] = static_cast<std::uint8_t>(std::max(0, m - kernels::kMaxFastScaleByte));
    }
  };
  const std::int64_t E = num_experts;
  s.w13.resize(static_cast<std::size_t>(E * 2 * inter));
  s.w2.resize(static_cast<std::size_t>(E * hidden));
  matrix(w13_scale, E * 2 * inter, hidden / 32, s.w13.data());
  matrix(w2_scale, E * hidden, inter / 32, s.w2.data());
  if (s.summary.max_byte > 254)
    fail(ErrorCode::Format, "E8M0 shifts: the NaN byte 0xFF in the scales");
  return s;
}

std::vector<std::uint8_t> shift_scales(const std::uint8_t* scales, int num_experts, int rows, int groups,
                                       const std::uint8_t* shifts) {
  if (num_experts <= 0 || rows <= 0 || groups <= 0)
    fail(ErrorCode::Shape, "shift_scales: E, rows and groups must be positive");
  std::vector<std::uint8_t> out(static_cast<std::size_t>(num_experts) * rows * groups);
  for (std::int64_t r = 0, n = static_cast<std::int64_t>(num_experts) * rows; r < n; ++r) {
    const int d = shifts[r];
    for (std::int64_t i = r * groups; i < (r + 1) * groups; ++i) {
      if (scales[i] < d)
        fail(ErrorCode::InvalidArgument, "shift_scales: E8M0 byte " + std::to_string(scales[i]) + " at expert " +
                                             std::to_string(r / rows) + ", row " + std::to_string(r % rows) +
                                             " lies below the row's shift " + std::to_string(d) +
                                             " (the row spans more than 128 bytes: Mxfp4Wide's case)");
      out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(scales[i] - d);
    }
  }
  return out;
}

}  // namespace mxmoe::prepare
