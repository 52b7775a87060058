// NVFP4 codecs (UE4M3 encode/decode, ModelOpt's quantisation rule) and the fp16 conversions, each
// against an independent float64 computation on fresh random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "formats/fp16.hpp"
#include "formats/nvfp4.hpp"
#include "test_util.hpp"

using namespace mxmoe::formats;
using mxmoe::test::e4m3_nearest;
using mxmoe::test::e4m3_value;

namespace {

// UE4M3 is E4M3's bytes 0..0x7E: its float64 model and nearest-byte search (x >= 0) are E4M3's
// (test_util.hpp).

double e2m1_nearest(double v) {  // ties to the even code, saturating at 6
  const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double a = std::fabs(v);
  double best = 6;
  for (int k = 0; k < 7 && a < 6; ++k)
    if (a >= grid[k] && a <= grid[k + 1]) {
      const double mid = 0.5 * (grid[k] + grid[k + 1]);
      best = a < mid ? grid[k] : a > mid ? grid[k + 1] : (k % 2 == 0 ? grid[k] : grid[k + 1]);
      break;
    }
  return v < 0 ? -best : best;
}

}  // namespace

TEST(Ue4m3, EveryValidByteRoundTripsAndDecodesByDefinition) {
  for (int b = 0; b <= 0x7E; ++b) {
    EXPECT_TRUE(ue4m3_valid(static_cast<std::uint8_t>(b)));
    EXPECT_EQ(static_cast<double>(ue4m3_decode(static_cast<std::uint8_t>(b))), e4m3_value(b)) << "byte " << b;
    EXPECT_EQ(ue4m3_encode(ue4m3_decode(static_cast<std::uint8_t>(b))), b) << "byte " << b;
  }
  EXPECT_FALSE(ue4m3_valid(0x7F));
  for (int b = 0x80; b < 256; ++b) EXPECT_FALSE(ue4m3_valid(static_cast<std::uint8_t>(b))) << "byte " << b;
  EXPECT_TRUE(std::isnan(ue4m3_decode(0x7F)));
}

TEST(Ue4m3, EncodeIsNearestEvenAgainstASearch) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> log2x(-14.0, 9.5);
  for (int i = 0; i < 20000; ++i) {
    const float x = static_cast<float>(std::exp2(log2x(rng)));
    ASSERT_EQ(ue4m3_encode(x), e4m3_nearest(x)) << "x = " << x;
  }
  // Exact midpoints between neighbours: ties to the even byte.
  for (int b = 0; b < 0x7E; ++b) {
    const float mid = static_cast<float>(0.5 * (e4m3_value(b) + e4m3_value(b + 1)));
    EXPECT_EQ(ue4m3_encode(mid), b % 2 == 0 ? b : b + 1) << "midpoint above byte " << b;
  }
}

TEST(Ue4m3, SaturatesAndRefusesToInventSigns) {
  EXPECT_EQ(ue4m3_encode(448.0f), 0x7E);
  EXPECT_EQ(ue4m3_encode(470.0f), 0x7E);
  EXPECT_EQ(ue4m3_encode(1e30f), 0x7E);
  EXPECT_EQ(ue4m3_encode(INFINITY), 0x7E);
  EXPECT_EQ(ue4m3_encode(NAN), kUe4m3Nan);  // NaN is never a silent number
  EXPECT_EQ(ue4m3_encode(-3.0f), 0);
  EXPECT_EQ(ue4m3_encode(-0.0f), 0);
  EXPECT_EQ(ue4m3_encode(std::ldexp(1.0f, -10)), 0);        // half the smallest subnormal: tie to 0
  EXPECT_EQ(ue4m3_encode(std::ldexp(1.0f, -10) * 1.01f), 1);
  EXPECT_EQ(ue4m3_encode(1e-30f), 0);
}

// ModelOpt's rule recomputed in float64 from its definition (nvfp4.hpp), per matrix.
TEST(Nvfp4, QuantizeFollowsModelOptRule) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> exp_pick(-30, 10);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 16 * 24;
    std::vector<float> x(n);
    const float s = std::ldexp(1.0f, exp_pick(rng));
    for (float& v : x) v = nd(rng) * s * (trial % 3 == 0 ? 1.0f : std::exp(nd(rng)));  // uneven blocks
    if (trial % 4 == 0)
      for (int i = 32; i < 48; ++i) x[i] = 0.0f;  // one all-zero block
    float amax = 0.0f;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    const float g = nvfp4_global_scale(amax);
    ASSERT_EQ(g, amax / 2688.0f);
    ASSERT_GT(g, 0.0f);
    std::vector<std::uint8_t> codes(n), scales(n / 16);
    nvfp4_quantize(x.data(), n, g, codes.data(), scales.data());
    for (int b = 0; b < n / 16; ++b) {
      float bmax = 0.0f;
      for (int i = 0; i < 16; ++i) bmax = std::max(bmax, std::fabs(x[b * 16 + i]));
      const int want_scale = e4m3_nearest(static_cast<double>(bmax / (6.0f * g)));
      ASSERT_EQ(scales[b], want_scale) << "trial " << trial << " block " << b;
      ASSERT_TRUE(ue4m3_valid(scales[b]));
      const float step = static_cast<float>(e4m3_value(want_scale)) * g;
      for (int i = 0; i < 16; ++i) {
        const double want = want_scale == 0 ? 0.0 : e2m1_nearest(static_cast<double>(x[b * 16 + i] / step));
        ASSERT_EQ(static_cast<double>(e2m1_decode(codes[b * 16 + i])), want) << "trial " << trial << " element " << b * 16 + i;
      }
    }
    if (trial % 4 == 0) {
      EXPECT_EQ(scales[2], 0) << "an all-zero block has scale 0";
    }
    // The largest block reaches the top of the UE4M3 range, and the dequantised matrix is close.
    EXPECT_GE(*std::max_element(scales.begin(), scales.end()), 0x7D);
    double err = 0, norm = 0;
    for (int i = 0; i < n; ++i) {
      const double back = static_cast<double>(nvfp4_dequantize(codes[i], scales[i / 16])) * g;
      err += (back - x[i]) * (back - x[i]);
      norm += static_cast<double>(x[i]) * x[i];
    }
    EXPECT_LT(std::sqrt(err / norm), 0.2) << "trial " << trial;
  }
}

TEST(Nvfp4, AllZeroMatrixHasGlobalOneAndZeroCodes) {
  EXPECT_EQ(nvfp4_global_scale(0.0f), 1.0f);
  std::vector<float> x(32, 0.0f);
  std::vector<std::uint8_t> codes(32, 0xAA), scales(2, 0xAA);
  nvfp4_quantize(x.data(), 32, 1.0f, codes.data(), scales.data());
  for (auto c : codes) EXPECT_EQ(c & 7, 0);
  for (auto s : scales) EXPECT_EQ(s, 0);
}

TEST(Fp16, EveryHalfRoundTripsAndDecodesByDefinition) {
  for (int h = 0; h < 65536; ++h) {
    const int exp = (h >> 10) & 31, man = h & 1023;
    const float v = fp16_to_float(static_cast<std::uint16_t>(h));
    if (exp == 31 && man != 0) {
      EXPECT_TRUE(std::isnan(v));
      EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(v))));
      continue;
    }
    double want = exp == 31 ? INFINITY : exp == 0 ? std::ldexp(man, -24) : std::ldexp(1.0 + man / 1024.0, exp - 15);
    if (h & 0x8000) want = -want;
    ASSERT_EQ(static_cast<double>(v), want) << "half " << h;
    ASSERT_EQ(float_to_fp16(v), h) << "half " << h;
  }
}

TEST(Fp16, RoundsToNearestEvenAgainstFloat64) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> log2x(-27.0, 17.0);
  std::uniform_int_distribution<int> sign(0, 1);
  for (int i = 0; i < 200000; ++i) {
    const float x = static_cast<float>((sign(rng) ? -1 : 1) * std::exp2(log2x(rng)));
    const std::uint16_t h = float_to_fp16(x);
    const double got = fp16_to_float(h);
    // Neighbours of the result must be no nearer; at a tie the even pattern wins.
    const double a = std::fabs(static_cast<double>(x));
    if (a >= 65520.0) {
      ASSERT_TRUE(std::isinf(got)) << x;
      continue;
    }
    const std::uint16_t mag = h & 0x7fff;
    const double g = std::fabs(got), d = std::fabs(g - a);
    if (mag < 0x7bff) {
      const double up = fp16_to_float(static_cast<std::uint16_t>(mag + 1));
      ASSERT_TRUE(d < up - a || (d == up - a && (mag % 2 == 0))) << x;
    }
    if (mag > 0) {
      const double down = fp16_to_float(static_cast<std::uint16_t>(mag - 1));
      ASSERT_TRUE(d < a - down || (d == a - down && (mag % 2 == 0))) << x;
    }
    ASSERT_EQ(std::signbit(got), std::signbit(x)) << x;
  }
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)), 0);       // tie to even (0)
  EXPECT_EQ(float_to_fp16(std::ldexp(3.0f, -25)), 2);       // 1.5 steps: tie to even (2)
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(NAN))));
}
