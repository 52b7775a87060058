// E2M1, E8M0, E4M3 and bf16 codecs, and MXFP4 quantization by the OCP rule.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "formats/mxfp4.hpp"

using namespace mxmoe::formats;

TEST(E2M1, AllSixteenCodesDecode) {
  const float expected[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0f, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(e2m1_decode(static_cast<std::uint8_t>(c)), expected[c]) << "code " << c;
    EXPECT_EQ(std::signbit(e2m1_decode(static_cast<std::uint8_t>(c))), c >= 8) << "code " << c;
  }
}

TEST(E2M1, EveryCodeRoundTrips) {
  for (int c = 0; c < 16; ++c) EXPECT_EQ(e2m1_encode(e2m1_decode(static_cast<std::uint8_t>(c))), c);
}

TEST(E2M1, TiesGoToEvenCode) {
  EXPECT_EQ(e2m1_encode(0.25f), 0);
  EXPECT_EQ(e2m1_encode(0.75f), 2);   // 0.5 (code 1) vs 1.0 (code 2)
  EXPECT_EQ(e2m1_encode(1.25f), 2);   // 1.0 vs 1.5
  EXPECT_EQ(e2m1_encode(1.75f), 4);   // 1.5 vs 2.0
  EXPECT_EQ(e2m1_encode(2.5f), 4);    // 2 vs 3
  EXPECT_EQ(e2m1_encode(3.5f), 6);    // 3 vs 4
  EXPECT_EQ(e2m1_encode(5.0f), 6);    // 4 vs 6
  EXPECT_EQ(e2m1_encode(-5.0f), 14);
  EXPECT_EQ(e2m1_encode(-0.75f), 10);
}

TEST(E2M1, NearestAwayFromTies) {
  EXPECT_EQ(e2m1_encode(0.26f), 1);
  EXPECT_EQ(e2m1_encode(0.74f), 1);
  EXPECT_EQ(e2m1_encode(5.01f), 7);
  EXPECT_EQ(e2m1_encode(4.99f), 6);
}

TEST(E2M1, Saturates) {
  EXPECT_EQ(e2m1_encode(7.0f), 7);
  EXPECT_EQ(e2m1_encode(1e30f), 7);
  EXPECT_EQ(e2m1_encode(-100.0f), 15);
  EXPECT_EQ(e2m1_encode(INFINITY), 7);
}

TEST(E8M0, AllBytes) {
  for (int b = 0; b < 256; ++b) {
    float v = e8m0_to_float(static_cast<std::uint8_t>(b));
    if (b == 255) {
      EXPECT_TRUE(std::isnan(v));
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), std::ldexp(1.0, b - 127)) << "byte " << b;
    std::uint8_t back = 0;
    ASSERT_TRUE(e8m0_from_float(v, &back)) << "byte " << b;
    EXPECT_EQ(back, b);
  }
}

TEST(E8M0, FromFloatRefusesNonPowersOfTwo) {
  std::uint8_t b;
  EXPECT_FALSE(e8m0_from_float(3.0f, &b));
  EXPECT_FALSE(e8m0_from_float(-2.0f, &b));
  EXPECT_FALSE(e8m0_from_float(0.0f, &b));
  EXPECT_FALSE(e8m0_from_float(NAN, &b));
  EXPECT_FALSE(e8m0_from_float(INFINITY, &b));
  EXPECT_FALSE(e8m0_from_float(1.5f, &b));
  EXPECT_TRUE(e8m0_from_float(0.125f, &b));
  EXPECT_EQ(b, 124);
}

TEST(E4M3, DecodeMatchesDefinition) {
  for (int b = 0; b < 256; ++b) {
    const int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
    float v = e4m3_decode(static_cast<std::uint8_t>(b));
    if (exp == 15 && man == 7) {
      EXPECT_TRUE(std::isnan(v));
      continue;
    }
    double ref = exp == 0 ? std::ldexp(man / 8.0, -6) : std::ldexp(1.0 + man / 8.0, exp - 7);
    if (sign) ref = -ref;
    EXPECT_EQ(static_cast<double>(v), ref) << "byte " << b;
  }
  EXPECT_EQ(e4m3_decode(0x7E), 448.0f);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(bits_float(0x3F808000u)), 0x3F80);  // tie, even stays
  EXPECT_EQ(float_to_bf16(bits_float(0x3F818000u)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(float_to_bf16(bits_float(0x3F808001u)), 0x3F81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(Packing, LowNibbleIsEvenIndex) {
  std::uint8_t codes[4] = {0x1, 0xA, 0xF, 0x3};
  std::uint8_t packed[2];
  pack_codes(codes, 4, packed);
  EXPECT_EQ(packed[0], 0xA1);
  EXPECT_EQ(packed[1], 0x3F);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(nibble_at(packed, i), codes[i]);
}

// The OCP rule computed independently in float64: X = floor(log2(amax)) - 2, each element
// rounded to the nearest E2M1 value (ties to even mantissa), saturated at 6.
static double ocp_reference(const float* blk, int i) {
  double amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(static_cast<double>(blk[j])));
  if (amax == 0) return 0;
  int X = static_cast<int>(std::floor(std::log2(amax))) - 2;
  double v = std::ldexp(static_cast<double>(blk[i]), -X);
  const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  double a = std::fabs(v), best = 6;
  if (a < 6) {
    for (int k = 0; k < 7; ++k) {
      if (a >= grid[k] && a <= grid[k + 1]) {
        double mid = 0.5 * (grid[k] + grid[k + 1]);
        if (a < mid) best = grid[k];
        else if (a > mid) best = grid[k + 1];
        else best = (k % 2 == 0) ? grid[k] : grid[k + 1];  // even code index wins
        break;
      }
    }
  }
  return std::ldexp(v < 0 ? -best : best, X);
}

TEST(Mxfp4, QuantizeDequantizeMatchesFloat64Rule) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale_pick(-20.0f, 20.0f);
  for (int trial = 0; trial < 2000; ++trial) {
    float x[64];
    const float s = std::ldexp(1.0f, static_cast<int>(scale_pick(rng)));
    for (float& v : x) v = nd(rng) * s;
    if (trial % 5 == 0) x[trial % 64] = 0.0f;
    if (trial % 7 == 0) x[3] = 4.0f * s;  // exact grid points and ties
    std::uint8_t codes[64], scales[2];
    mxfp4_quantize(x, 64, codes, scales);
    for (int i = 0; i < 64; ++i) {
      double got = mxfp4_dequantize(codes[i], scales[i / 32]);
      EXPECT_EQ(got, ocp_reference(x + (i / 32) * 32, i % 32)) << "trial " << trial << " i " << i;
    }
  }
}

TEST(Mxfp4, BlockScaleAndSaturation) {
  float x[32] = {};
  x[0] = 6.0f;   // floor(log2 6) = 2 -> X = 0 -> scale byte 127
  x[1] = 7.9f;   // same exponent, saturates to 6
  x[2] = -0.3f;
  std::uint8_t codes[32], scales[1];
  mxfp4_quantize(x, 32, codes, scales);
  EXPECT_EQ(scales[0], 127);
  EXPECT_EQ(e2m1_decode(codes[0]), 6.0f);
  EXPECT_EQ(e2m1_decode(codes[1]), 6.0f);
  EXPECT_EQ(e2m1_decode(codes[2]), -0.5f);  // 0.3 nearer 0.5 than 0
  float zeros[32] = {};
  mxfp4_quantize(zeros, 32, codes, scales);
  EXPECT_EQ(scales[0], kE8m0One);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(codes[i] & 7, 0);
}
