// The W4A8 weight fold (issue 14, item 2), on the CPU: an MXFP4 matrix (packed E2M1 [N, K/2], E8M0
// scales [N, K/32]) becomes E4M3 bytes [N, K] and one base exponent per row, so that FP8 tensor cores
// can multiply it with E4M3 activations and the epilogue applies 2^base once per row:
//
//   weight[n][k] = e2m1[n][k] x 2^(b[n][k/32] - 127)  ==  e4m3[n][k] x 2^base[n]   (exactly, when it fits)
//
// The rule. A group is "zero" when all its 32 codes are +-0; its values are 0 whatever its scale. Over
// the non-zero groups of row n, b_max is the largest E8M0 byte and
//   base[n] = (b_max - 127) - 6                     (a row with no non-zero group: base 0)
// Each group then has the shift s = (b - 127) - base = b - b_max + 6 <= 6, and its element becomes
//   e4m3 = nearest E4M3 (round to nearest even) of e2m1 x 2^s.
//
// Exactness (why shifts -8..6 lose nothing). A non-zero E2M1 magnitude is 0.5, 1, 1.5, 2, 3, 4 or 6,
// that is m x 2^p with m in {1, 1.5} (one or two significant bits) and p in -1..2, where m = 1.5 only
// with p >= 0 (1.5, 3, 6). The product is m x 2^q with q = p + s.
//   * Normal range: E4M3 normals are (1 + j/8) x 2^q for q in -6..8 (j = 0..7, but not q = 8, j = 7),
//     so any q in -6..8 holds m = 1 (j = 0) and m = 1.5 (j = 4). The largest product, s = 6 and
//     magnitude 6 (q = 8, m = 1.5), is 384 <= 448. So every s <= 6 stays finite, which is why the base
//     sits 6 below the row's largest exponent: the largest group uses the top of E4M3's range.
//   * Subnormal range: E4M3 subnormals are i x 2^-9 (i = 1..7), so m x 2^q with q < -6 is exact when
//     m x 2^(q+9) is an integer from 1 to 7. m = 1: q >= -9, i = 2^(q+9) in {1, 2, 4}. m = 1.5: needs
//     q >= -8, i in {3, 6}; m = 1.5 comes with p >= 0, so q >= s >= -8 holds.
//   * So s >= -8 (q >= -9) is exact for every code; the sign is E4M3's own bit, and +-0 stays +-0.
//   * s = -9 is the first shift that fails: 0.5 x 2^-9 = 2^-10 is half the smallest subnormal (it
//     rounds to 0, tie to even) and 1.5 x 2^-9 = 1.5 steps of 2^-9 (it rounds to 2 x 2^-9).
// So a group is exact when b >= b_max - 14: its exponent lies within 15 values of the row's largest.
// Groups below that (s < -8) are re-quantised by the same rounding (possibly to zero) and counted, with
// the elements whose value changed; inspect (`mxmoe inspect --act fp8`) and prepare report the counts.
//
// Scales must be valid E8M0 bytes (0x00..0xFE; CanonicalMoeWeights::validate refuses 0xFF).
#pragma once

#include <cstdint>
#include <vector>

#include "mxmoe/weights.hpp"
#include "prepare/w4a8_row_base.hpp"  // zero_group, row_base, kBaseBelowMax

namespace mxmoe::w4a8 {

constexpr int kMinExactShift = -8;
constexpr int kMaxShift = 6;

// The E4M3 byte nearest to e2m1(code) x 2^shift (round to nearest even; exact for shifts -8..6).
std::uint8_t fold_element(std::uint8_t code, int shift);

// Folds one row (k a multiple of 32): writes k E4M3 bytes to `e4m3` (may be null: counts only) and adds
// its groups to `counts` (may be null). Returns the row's base.
int fold_row(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t k, std::uint8_t* e4m3, W4a8FoldCounts* counts);

// A folded matrix: E4M3 bytes [rows, k] (row-major, element k of row n at n * k + k), base [rows].
struct FoldedMatrix {
  std::int64_t rows = 0, k = 0;
  std::vector<std::uint8_t> e4m3;
  std::vector<std::int32_t> base;
  W4a8FoldCounts counts;
};
FoldedMatrix fold_matrix(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t rows, std::int64_t k);

// The counts of fold_matrix without writing its bytes (the codes are read to find the zero groups).
W4a8FoldCounts count_fold(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t rows, std::int64_t k);

}  // namespace mxmoe::w4a8
