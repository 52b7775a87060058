// The tile layout is a permutation of the canonical weights, and the GEMM's bit tricks decode it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "formats/bf16.hpp"
#include "formats/mxfp4.hpp"
#include "kernels/dequant.hpp"
#include "mxmoe/error.hpp"
#include "prepare/prepare_cpu.hpp"

using namespace mxmoe;
using namespace mxmoe::tiling;

namespace {

struct Canonical {
  std::vector<std::uint8_t> w, s;
};

Canonical random_matrix(int rows, int k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Canonical c;
  c.w.resize(static_cast<std::size_t>(rows) * k / 2);
  c.s.resize(static_cast<std::size_t>(rows) * k / 32);
  for (auto& b : c.w) b = static_cast<std::uint8_t>(rng());
  for (auto& b : c.s) b = static_cast<std::uint8_t>(100 + rng() % 29);
  return c;
}

}  // namespace

class TileLayoutRoundTrip : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(TileLayoutRoundTrip, UntileRestoresCanonicalExactly) {
  const auto [rows, k, gate_up] = GetParam();
  const TiledShape shape{rows, k, gate_up};
  const Canonical c = random_matrix(rows, k, static_cast<std::uint32_t>(rows * 7 + k));
  const TiledMatrix t = tile_matrix_cpu(c.w.data(), c.s.data(), shape);
  EXPECT_EQ(static_cast<std::int64_t>(t.weights.size()), shape.weight_bytes());
  std::vector<std::uint8_t> w(c.w.size(), 0xAA), s(c.s.size(), 0xAA);
  untile_matrix_cpu(t, shape, w.data(), s.data());
  EXPECT_EQ(w, c.w);
  EXPECT_EQ(s, c.s);
}

// 2880 = 45 x 64; 360 (gpt-oss I/8) and 96 leave a half chunk of K; 720 rows = 45 tiles.
INSTANTIATE_TEST_SUITE_P(Shapes, TileLayoutRoundTrip,
                         ::testing::Values(std::make_tuple(16, 64, false), std::make_tuple(32, 96, false),
                                           std::make_tuple(64, 2880, false), std::make_tuple(48, 352, false),
                                           std::make_tuple(32, 128, true), std::make_tuple(720, 96, true),
                                           std::make_tuple(64, 224, true)));

TEST(TileLayout, PaddingIsZeroCodesAndUnitScales) {
  const TiledShape shape{16, 32, false};  // one chunk, half of it padding
  const Canonical c = random_matrix(16, 32, 3);
  const TiledMatrix t = tile_matrix_cpu(c.w.data(), c.s.data(), shape);
  // The layout permutes bits, so equal set-bit counts mean the padding added only zero codes.
  auto popcount = [](const std::vector<std::uint8_t>& v) {
    int n = 0;
    for (auto b : v) n += __builtin_popcount(b);
    return n;
  };
  EXPECT_EQ(popcount(t.weights), popcount(c.w));
  int pad_scales = 0;
  for (auto b : t.scales) pad_scales += b == kPadScale;
  EXPECT_GE(pad_scales, 16);
}

TEST(TileLayout, RejectsShapesOffTheGrid) {
  std::vector<std::uint8_t> w(1024), s(64);
  EXPECT_THROW(tile_matrix_cpu(w.data(), s.data(), TiledShape{24, 64, false}), Error);
  EXPECT_THROW(tile_matrix_cpu(w.data(), s.data(), TiledShape{16, 48, false}), Error);
  try {
    tile_matrix_cpu(w.data(), s.data(), TiledShape{16, 48, false});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("K=48"), std::string::npos) << e.what();
  }
}

// Simulates what one lane of the GEMM does with its 16 bytes and 4 scale bytes, and checks every
// A-fragment element against the canonical value of the row and K it must hold.
TEST(TileLayout, LaneFragmentsDecodeToTheCanonicalValues) {
  for (bool gate_up : {false, true}) {
    const int rows = 32, k = 128, I = rows / 2;
    const TiledShape shape{rows, k, gate_up};
    Canonical c = random_matrix(rows, k, gate_up ? 11 : 12);
    const TiledMatrix t = tile_matrix_cpu(c.w.data(), c.s.data(), shape);
    for (int tile = 0; tile < shape.tiles(); ++tile)
      for (int chunk = 0; chunk < shape.chunks(); ++chunk)
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, tq = lane % 4;
          const std::size_t base = (static_cast<std::size_t>(tile) * shape.chunks() + chunk);
          std::uint32_t sc;
          std::memcpy(&sc, &t.scales[base * 32 + g * 4], 4);
          for (int step = 0; step < 4; ++step) {
            std::uint32_t word;
            std::memcpy(&word, &t.weights[base * 512 + lane * 16 + step * 4], 4);
            const std::uint32_t regs[4] = {kernels::e2m1_pair_bits<0>(word), kernels::e2m1_pair_bits<1>(word),
                                           kernels::e2m1_pair_bits<2>(word), kernels::e2m1_pair_bits<3>(word)};
            const int grp = step / 2;
            for (int r = 0; r < 4; ++r)
              for (int half = 0; half < 2; ++half) {
                // A fragment: register r holds (row g + 8*(r&1), k 2t + 8*(r>>1) + half).
                const int prow = tile * 16 + g + 8 * (r & 1);
                const int kk = chunk * 64 + step * 16 + 2 * tq + 8 * (r >> 1) + half;
                const int crow = gate_up ? (prow % 16 < 8 ? 8 * tile + prow % 16 : I + 8 * tile + prow % 16 - 8) : prow;
                const std::uint8_t code = formats::nibble_at(&c.w[static_cast<std::size_t>(crow) * (k / 2)], kk);
                const std::uint8_t sbyte = c.s[static_cast<std::size_t>(crow) * (k / 32) + kk / 32];
                const std::uint8_t lane_sbyte = (sc >> (8 * (grp * 2 + (r & 1)))) & 0xff;
                ASSERT_EQ(lane_sbyte, sbyte);
                const float nib = formats::bf16_to_float(static_cast<std::uint16_t>(regs[r] >> (16 * half)));
                const float scale = formats::bf16_to_float(static_cast<std::uint16_t>(kernels::e8m0_scale_pair_bits(lane_sbyte)));
                // The product of a value x 2^-126 and 2^(b-1): exact, as the GPU's bf16 multiply is.
                const double got = static_cast<double>(nib) * scale;
                const double want = static_cast<double>(formats::e2m1_decode(code)) * std::ldexp(1.0, sbyte - 127);
                ASSERT_EQ(got, want) << "tile " << tile << " chunk " << chunk << " lane " << lane << " step " << step;
              }
          }
        }
  }
}

TEST(Dequant, BitTrickCoversEveryCodeInEveryRegister) {
  for (int code = 0; code < 16; ++code) {
    // The code in both halves of all four registers.
    const std::uint32_t byte = static_cast<std::uint32_t>(code) * 0x11u;
    const std::uint32_t word = fragment_word(byte, byte, byte, byte);
    const std::uint32_t regs[4] = {kernels::e2m1_pair_bits<0>(word), kernels::e2m1_pair_bits<1>(word),
                                   kernels::e2m1_pair_bits<2>(word), kernels::e2m1_pair_bits<3>(word)};
    for (auto r : regs)
      for (int half = 0; half < 2; ++half) {
        const double v = formats::bf16_to_float(static_cast<std::uint16_t>(r >> (16 * half)));
        EXPECT_EQ(v * std::ldexp(1.0, 126), formats::e2m1_decode(static_cast<std::uint8_t>(code))) << "code " << code;
      }
  }
  // Each register must see only its own element: distinct codes per register and half.
  for (int trial = 0; trial < 256; ++trial) {
    std::uint32_t bytes[4];
    for (int r = 0; r < 4; ++r) bytes[r] = static_cast<std::uint32_t>((trial * 37 + r * 91 + 13) & 0xff);
    const std::uint32_t word = fragment_word(bytes[0], bytes[1], bytes[2], bytes[3]);
    const std::uint32_t regs[4] = {kernels::e2m1_pair_bits<0>(word), kernels::e2m1_pair_bits<1>(word),
                                   kernels::e2m1_pair_bits<2>(word), kernels::e2m1_pair_bits<3>(word)};
    for (int r = 0; r < 4; ++r)
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t code = static_cast<std::uint8_t>((bytes[r] >> (4 * half)) & 15u);
        const double v = formats::bf16_to_float(static_cast<std::uint16_t>(regs[r] >> (16 * half)));
        ASSERT_EQ(v * std::ldexp(1.0, 126), formats::e2m1_decode(code)) << "register " << r << " half " << half;
      }
  }
  for (int b = 0; b <= kernels::kMaxFastScaleByte; ++b) {
    const std::uint32_t pair = kernels::e8m0_scale_pair_bits(static_cast<std::uint32_t>(b));
    EXPECT_EQ(pair >> 16, pair & 0xffffu);
    EXPECT_EQ(static_cast<double>(formats::bf16_to_float(static_cast<std::uint16_t>(pair))), std::ldexp(1.0, b - 1)) << b;
  }
}
