// W4A8 groundwork (issue 14) on the CPU: the signed E4M3 codec (formats/e4m3.hpp), checked over every
// byte and against a nearest-value search, and the weight fold (prepare/w4a8_fold), checked for
// exactness over every (code, shift) pair it claims, at the span boundary, in its counts, on random
// matrices, and in what it re-quantises (the nearest E4M3, by search).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "formats/e4m3.hpp"
#include "formats/mxfp4.hpp"
#include "formats/nvfp4.hpp"
#include "mxmoe/error.hpp"
#include "prepare/w4a8_fold.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::formats;
using mxmoe::test::e2m1_value;
using mxmoe::test::e4m3_nearest;
using mxmoe::test::e4m3_value;

namespace {

// A row of groups: packed codes [32 * groups / 2] and scales [groups].
struct Mat {
  std::int64_t rows, k;
  std::vector<std::uint8_t> codes, packed, scales;  // codes unpacked [rows, k]
  void pack() {
    packed.resize(static_cast<std::size_t>(rows * k / 2));
    pack_codes(codes.data(), rows * k, packed.data());
  }
  double value(std::int64_t n, std::int64_t i) const {
    return e2m1_value(codes[static_cast<std::size_t>(n * k + i)]) * std::ldexp(1.0, scales[static_cast<std::size_t>(n * (k / 32) + i / 32)] - 127);
  }
};

Mat random_mat(std::int64_t rows, std::int64_t k, std::mt19937& rng, int b_lo, int b_hi) {
  Mat m{rows, k, {}, {}, {}};
  m.codes.resize(static_cast<std::size_t>(rows * k));
  m.scales.resize(static_cast<std::size_t>(rows * k / 32));
  for (auto& c : m.codes) c = static_cast<std::uint8_t>(rng() % 16);
  for (auto& s : m.scales) s = static_cast<std::uint8_t>(b_lo + static_cast<int>(rng() % static_cast<unsigned>(b_hi - b_lo + 1)));
  m.pack();
  return m;
}

}  // namespace

// ---- E4M3 ---------------------------------------------------------------------------------------

TEST(W4a8E4m3, EveryByteDecodesByDefinitionAndRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    const float v = e4m3_decode(static_cast<std::uint8_t>(b));
    if (b == 0x7F || b == 0xFF) {
      EXPECT_TRUE(std::isnan(v)) << "byte " << b;
      EXPECT_TRUE(e4m3_is_nan(static_cast<std::uint8_t>(b)));
      continue;
    }
    EXPECT_FALSE(e4m3_is_nan(static_cast<std::uint8_t>(b)));
    EXPECT_EQ(static_cast<double>(v), e4m3_value(b)) << "byte " << b;
    EXPECT_EQ(std::signbit(v), b >= 0x80) << "byte " << b;  // 0x80 is -0
    EXPECT_EQ(e4m3_encode(v), b) << "byte " << b;
    EXPECT_EQ(round_to_e4m3(v), v) << "byte " << b;
  }
  EXPECT_EQ(e4m3_decode(0x7E), 448.0f);
  EXPECT_EQ(e4m3_decode(0xFE), -448.0f);
  EXPECT_EQ(e4m3_decode(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_decode(0x08), std::ldexp(1.0f, -6));
}

TEST(W4a8E4m3, TiesGoToTheEvenMantissaOnBothSides) {
  for (int b = 0; b < 0x7E; ++b) {
    const double mid = 0.5 * (e4m3_value(b) + e4m3_value(b + 1));  // exact in float (5 significant bits)
    ASSERT_EQ(static_cast<double>(static_cast<float>(mid)), mid);
    const int even = b % 2 == 0 ? b : b + 1;
    EXPECT_EQ(e4m3_encode(static_cast<float>(mid)), even) << "midpoint above byte " << b;
    EXPECT_EQ(e4m3_encode(static_cast<float>(-mid)), even | 0x80) << "midpoint below byte " << (b | 0x80);
    // Just off the midpoint, the nearer side wins.
    EXPECT_EQ(e4m3_encode(std::nextafter(static_cast<float>(mid), 0.0f)), b);
    EXPECT_EQ(e4m3_encode(std::nextafter(static_cast<float>(mid), 1e9f)), b + 1);
  }
}

TEST(W4a8E4m3, EncodeIsNearestAgainstASearchAndSaturates) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> lg(-14.0, 10.0);
  for (int i = 0; i < 200000; ++i) {
    const float x = static_cast<float>((rng() & 1 ? -1.0 : 1.0) * std::exp2(lg(rng)));
    ASSERT_EQ(e4m3_encode(x), e4m3_nearest(x)) << "x = " << x;
  }
  EXPECT_EQ(e4m3_encode(448.0f), 0x7E);
  EXPECT_EQ(e4m3_encode(463.9f), 0x7E);
  EXPECT_EQ(e4m3_encode(464.0f), 0x7E);  // would round to 480, which E4M3FN does not have: saturate
  EXPECT_EQ(e4m3_encode(1e30f), 0x7E);
  EXPECT_EQ(e4m3_encode(INFINITY), 0x7E);
  EXPECT_EQ(e4m3_encode(-500.0f), 0xFE);
  EXPECT_EQ(e4m3_encode(-INFINITY), 0xFE);
  EXPECT_TRUE(e4m3_is_nan(e4m3_encode(NAN)));  // NaN is never a number
  EXPECT_EQ(e4m3_encode(0.0f), 0x00);
  EXPECT_EQ(e4m3_encode(-0.0f), 0x80);
  EXPECT_EQ(e4m3_encode(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal: tie to zero
  EXPECT_EQ(e4m3_encode(-std::ldexp(1.0f, -10)), 0x80);
  EXPECT_EQ(e4m3_encode(std::ldexp(1.0f, -10) * 1.01f), 0x01);
  EXPECT_EQ(e4m3_encode(std::numeric_limits<float>::denorm_min()), 0x00);
  // The unsigned wrapper NVFP4 uses is the same magnitude encoder.
  for (int b = 0; b <= 0x7E; ++b) EXPECT_EQ(ue4m3_encode(e4m3_decode(static_cast<std::uint8_t>(b))), b);
  EXPECT_EQ(ue4m3_encode(-3.0f), 0);
}

TEST(W4a8E4m3, RowScaleRule) {
  EXPECT_EQ(fp8_row_scale(0.0f), 1.0f);
  EXPECT_EQ(fp8_row_scale(448.0f), 1.0f);
  EXPECT_EQ(fp8_row_scale(7.0f), 7.0f / 448.0f);
  EXPECT_EQ(fp8_row_scale(1e-40f), kFp8MinRowScale);  // 1 / scale stays finite
  EXPECT_TRUE(std::isfinite(1.0f / fp8_row_scale(1e-40f)));
  // The row's largest element lands on (or, by the reciprocal's rounding, next to) 448, never beyond.
  std::mt19937 rng(3);
  for (int i = 0; i < 10000; ++i) {
    const float amax = std::ldexp(1.0f + static_cast<float>(rng() % 1000000) / 1e6f, static_cast<int>(rng() % 60) - 30);
    const float s = fp8_row_scale(amax);
    const std::uint8_t q = fp8_quantize(amax, 1.0f / s), qn = fp8_quantize(-amax, 1.0f / s);
    EXPECT_GE(q, 0x7D);
    EXPECT_LE(q, 0x7E);
    EXPECT_EQ(qn, q | 0x80);
  }
}

// ---- the fold ------------------------------------------------------------------------------------

TEST(W4a8Fold, EveryCodeAtEveryExactShiftIsExact) {
  int pairs = 0;
  for (int shift = w4a8::kMinExactShift; shift <= w4a8::kMaxShift; ++shift)
    for (int code = 0; code < 16; ++code) {
      const std::uint8_t b = w4a8::fold_element(static_cast<std::uint8_t>(code), shift);
      ASSERT_FALSE(e4m3_is_nan(b));
      EXPECT_EQ(e4m3_value(b), std::ldexp(e2m1_value(code), shift)) << "code " << code << " shift " << shift;
      EXPECT_EQ(b >= 0x80, code >= 8) << "the sign is E4M3's own bit";
      ++pairs;
    }
  EXPECT_EQ(pairs, 15 * 16);
  // The top of the range: 6 x 2^6 = 384, the largest product, below 448.
  EXPECT_EQ(e4m3_decode(w4a8::fold_element(7, 6)), 384.0f);
  // The bottom: 0.5 x 2^-8 = 2^-9, the smallest subnormal; 1.5 x 2^-8 = 3 x 2^-9.
  EXPECT_EQ(w4a8::fold_element(1, -8), 0x01);
  EXPECT_EQ(w4a8::fold_element(3, -8), 0x03);
}

TEST(W4a8Fold, ShiftMinusNineIsTheFirstThatLoses) {
  for (int code = 0; code < 16; ++code) {
    const double want = std::ldexp(e2m1_value(code), -9);
    const std::uint8_t b = w4a8::fold_element(static_cast<std::uint8_t>(code), -9);
    EXPECT_EQ(b, e4m3_nearest(want)) << "code " << code;
    const bool lossy = (code & 7) == 1 || (code & 7) == 3;  // 0.5 and 1.5
    EXPECT_EQ(e4m3_value(b) != want, lossy) << "code " << code;
  }
  EXPECT_EQ(w4a8::fold_element(1, -9), 0x00);  // 2^-10: tie to zero
  EXPECT_EQ(w4a8::fold_element(9, -9), 0x80);
  EXPECT_EQ(w4a8::fold_element(3, -9), 0x02);  // 1.5 x 2^-9: tie to 2 x 2^-9
}

TEST(W4a8Fold, SpanBoundaryAndCounts) {
  // One row of four groups, all codes 1 (0.5) and 3 (1.5) alternating, so a lossy shift changes every
  // element: scales b_max, b_max - 14 (shift -8, exact), b_max - 15 (shift -9), b_max - 30 (shift -24).
  const int b_max = 140;
  Mat m{1, 128, std::vector<std::uint8_t>(128), {}, {static_cast<std::uint8_t>(b_max), static_cast<std::uint8_t>(b_max - 14),
                                                     static_cast<std::uint8_t>(b_max - 15), static_cast<std::uint8_t>(b_max - 30)}};
  for (int i = 0; i < 128; ++i) m.codes[static_cast<std::size_t>(i)] = i % 2 ? 3 : 1;
  m.pack();
  const w4a8::FoldedMatrix f = w4a8::fold_matrix(m.packed.data(), m.scales.data(), 1, 128);
  EXPECT_EQ(f.base[0], (b_max - 127) - 6);
  EXPECT_EQ(f.counts.groups, 4);
  EXPECT_EQ(f.counts.requantized_groups, 2);
  EXPECT_EQ(f.counts.changed_elements, 64);  // every element of both lossy groups
  for (int i = 0; i < 64; ++i)
    EXPECT_EQ(std::ldexp(e4m3_value(f.e4m3[static_cast<std::size_t>(i)]), f.base[0]), m.value(0, i)) << "element " << i;
  // Shift -9: 0.5 -> 0, 1.5 -> 2 steps; shift -24: everything flushes to zero.
  for (int i = 64; i < 96; ++i) EXPECT_EQ(f.e4m3[static_cast<std::size_t>(i)], i % 2 ? 0x02 : 0x00);
  for (int i = 96; i < 128; ++i) EXPECT_EQ(f.e4m3[static_cast<std::size_t>(i)], 0x00);
  const W4a8FoldCounts c = w4a8::count_fold(m.packed.data(), m.scales.data(), 1, 128);
  EXPECT_EQ(c.groups, 4);
  EXPECT_EQ(c.requantized_groups, 2);
  EXPECT_EQ(c.changed_elements, 64);
  // With codes 2 (1.0) and 4 (2.0) the shift -9 group is exact after all (2^-9, 2^-8): re-quantised,
  // no element changed; at shift -24 all change.
  for (int i = 0; i < 128; ++i) m.codes[static_cast<std::size_t>(i)] = i % 2 ? 4 : 2;
  m.pack();
  const W4a8FoldCounts c2 = w4a8::count_fold(m.packed.data(), m.scales.data(), 1, 128);
  EXPECT_EQ(c2.requantized_groups, 2);
  EXPECT_EQ(c2.changed_elements, 32);
}

TEST(W4a8Fold, ZeroGroupsAndZeroRows) {
  // A zero group neither sets the base (its huge scale is ignored) nor counts as re-quantised (its tiny
  // scale is harmless); a row of zeros (+0 and -0 codes) gets base 0 and folds to signed zeros.
  Mat m{2, 96, std::vector<std::uint8_t>(192, 0), {}, {250, 130, 1, 200, 3, 0}};
  for (int i = 32; i < 64; ++i) m.codes[static_cast<std::size_t>(i)] = 5;  // row 0 group 1 (scale 130) non-zero
  m.codes[100] = 8;                                                         // row 1: a -0
  m.pack();
  const w4a8::FoldedMatrix f = w4a8::fold_matrix(m.packed.data(), m.scales.data(), 2, 96);
  EXPECT_EQ(f.base[0], (130 - 127) - 6);
  EXPECT_EQ(f.base[1], 0);
  EXPECT_EQ(f.counts.groups, 6);
  EXPECT_EQ(f.counts.requantized_groups, 0);
  EXPECT_EQ(f.counts.changed_elements, 0);
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t i = 0; i < 96; ++i)
      EXPECT_EQ(std::ldexp(e4m3_value(f.e4m3[static_cast<std::size_t>(n * 96 + i)]), f.base[static_cast<std::size_t>(n)]), m.value(n, i));
  EXPECT_EQ(f.e4m3[96 + 4], 0x80);  // group 0 of row 1: scale 200, 73 exponents above base 0, still a zero
  for (std::size_t i = 0; i < f.e4m3.size(); ++i)
    if (i < 32 || i >= 64) {
      EXPECT_EQ(f.e4m3[i] & 0x7f, 0) << "element " << i;
    }
}

TEST(W4a8Fold, RandomMatricesWithinTheSpanRoundTripExactly) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  for (const auto& [lo, hi] : std::vector<std::pair<int, int>>{{120, 134}, {0, 14}, {240, 254}, {100, 110}}) {
    const Mat m = random_mat(24, 256, rng, lo, hi);  // spans of at most 15 exponents
    const w4a8::FoldedMatrix f = w4a8::fold_matrix(m.packed.data(), m.scales.data(), m.rows, m.k);
    EXPECT_EQ(f.counts.groups, 24 * 8);
    EXPECT_EQ(f.counts.requantized_groups, 0);
    EXPECT_EQ(f.counts.changed_elements, 0);
    for (std::int64_t n = 0; n < m.rows; ++n)
      for (std::int64_t i = 0; i < m.k; ++i) {
        const std::uint8_t b = f.e4m3[static_cast<std::size_t>(n * m.k + i)];
        ASSERT_EQ(std::ldexp(e4m3_value(b), f.base[static_cast<std::size_t>(n)]), m.value(n, i)) << "row " << n << " element " << i;
      }
  }
}

TEST(W4a8Fold, RequantisedValuesAreTheNearestE4m3) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  const Mat m = random_mat(40, 512, rng, 100, 140);  // spans up to 40: many groups re-quantised
  const w4a8::FoldedMatrix f = w4a8::fold_matrix(m.packed.data(), m.scales.data(), m.rows, m.k);
  W4a8FoldCounts want;
  for (std::int64_t n = 0; n < m.rows; ++n) {
    const int base = f.base[static_cast<std::size_t>(n)];
    for (std::int64_t g = 0; g < m.k / 32; ++g) {
      ++want.groups;
      bool zero = true, exact = (m.scales[static_cast<std::size_t>(n * (m.k / 32) + g)] - 127) - base >= -8;
      for (std::int64_t i = g * 32; i < g * 32 + 32; ++i) zero = zero && e2m1_value(m.codes[static_cast<std::size_t>(n * m.k + i)]) == 0;
      if (!exact && !zero) ++want.requantized_groups;
      for (std::int64_t i = g * 32; i < g * 32 + 32; ++i) {
        const double target = std::ldexp(m.value(n, i), -base);
        const std::uint8_t b = f.e4m3[static_cast<std::size_t>(n * m.k + i)];
        ASSERT_EQ(b, e4m3_nearest(target)) << "row " << n << " element " << i;
        if (e4m3_value(b) != target) ++want.changed_elements;
      }
    }
  }
  EXPECT_GT(want.requantized_groups, 0);
  EXPECT_EQ(f.counts.groups, want.groups);
  EXPECT_EQ(f.counts.requantized_groups, want.requantized_groups);
  EXPECT_EQ(f.counts.changed_elements, want.changed_elements);
  const W4a8FoldCounts c = w4a8::count_fold(m.packed.data(), m.scales.data(), m.rows, m.k);
  EXPECT_EQ(c.requantized_groups, want.requantized_groups);
  EXPECT_EQ(c.changed_elements, want.changed_elements);
  std::printf("random spans up to 40: %lld of %lld groups re-quantised, %lld elements changed\n",
              static_cast<long long>(want.requantized_groups), static_cast<long long>(want.groups),
              static_cast<long long>(want.changed_elements));
}

TEST(W4a8Fold, ReportCountsEveryTensorAndRefusesNvfp4) {
  SyntheticSpec s;
  s.num_experts = 3;
  s.hidden = 64;
  s.inter = 96;
  CanonicalMoeWeights w = make_synthetic_weights(s);
  W4a8FoldReport r = w4a8_fold_report(w);
  EXPECT_EQ(r.w13.groups, 3 * 2 * 96 * 64 / 32);
  EXPECT_EQ(r.w2.groups, 3 * 64 * 96 / 32);
  EXPECT_EQ(r.w13.requantized_groups, 0);  // trained-like normal weights span a few exponents per row
  EXPECT_EQ(r.w2.requantized_groups, 0);
  // Expert 1, w2 row 5: group 0 pushed 20 exponents above the row's others.
  std::uint8_t* sc = w.w2_scale.mutable_as<std::uint8_t>() + (64 + 5) * 3;
  sc[0] = static_cast<std::uint8_t>(std::max<int>(sc[1], sc[2]) + 20);
  r = w4a8_fold_report(w);
  EXPECT_EQ(r.w2.requantized_groups, 2);
  EXPECT_GT(r.w2.changed_elements, 0);
  EXPECT_EQ(r.w13.requantized_groups, 0);
  s.format = WeightFormat::nvfp4_with(DType::BF16);
  try {
    w4a8_fold_report(make_synthetic_weights(s));
    ADD_FAILURE() << "NVFP4 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs MXFP4 weights"), std::string::npos) << e.what();
  }
}
