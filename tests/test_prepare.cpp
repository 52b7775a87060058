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

// The bf16 placement is a permutation of the word: the eight elements' four bits fill its 32 bits,
// each once.
TEST(TileLayout, Bf16PlacementUsesEveryBitOnce) {
  std::uint32_t used = 0;
  int count = 0;
  for (int reg = 0; reg < 4; ++reg)
    for (int half = 0; half < 2; ++half) {
      const std::uint32_t bits = place_element(15u, reg, half);
      EXPECT_EQ(used & bits, 0u) << "register " << reg << " half " << half << " reuses a bit";
      used |= bits;
      count += __builtin_popcount(bits);
    }
  EXPECT_EQ(used, 0xFFFFFFFFu);
  EXPECT_EQ(count, 32);
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
  // The GEMM takes each of a scale word's four bytes with a byte permute and one multiply-add: the
  // same pair as e8m0_scale_pair_bits for every byte it runs (0..128), whatever the other bytes.
  for (int b = 0; b <= kernels::kMaxFastScaleByte; ++b)
    for (std::uint32_t other : {0x00000000u, 0xFFFFFFFFu, 0x80808080u, 0x5A3C7F01u}) {
      const std::uint32_t pair = kernels::e8m0_scale_pair_bits(static_cast<std::uint32_t>(b));
      const auto with_byte = [&](int i) { return (other & ~(0xffu << (8 * i))) | (static_cast<std::uint32_t>(b) << (8 * i)); };
      EXPECT_EQ(kernels::e8m0_scale_pair_bits_of_byte<0>(with_byte(0)), pair) << b;
      EXPECT_EQ(kernels::e8m0_scale_pair_bits_of_byte<1>(with_byte(1)), pair) << b;
      EXPECT_EQ(kernels::e8m0_scale_pair_bits_of_byte<2>(with_byte(2)), pair) << b;
      EXPECT_EQ(kernels::e8m0_scale_pair_bits_of_byte<3>(with_byte(3)), pair) << b;
    }
  EXPECT_EQ(kernels::byte_perm(0x44332211u, 0x88776655u, 0x7531u), 0x88664422u) << "CUDA's documented selection";
  EXPECT_EQ(kernels::byte_perm(0x44332211u, 0u, 0x4141u), 0x00220022u);
}

// ---- NVFP4 (group 16) and every E8M0 byte ----

namespace {

// fp16 bits -> double (exact), for checking the fp16 operand bits.
double f16_value(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
  const double mag = exp == 0 ? std::ldexp(man, -24) : std::ldexp(1024 + man, exp - 25);
  return sign ? -mag : mag;
}

// fp16 represents x exactly: |x| < 65520, a multiple of 2^-24, and at most 11 significant bits.
bool f16_holds(double x) {
  const double a = std::fabs(x);
  if (a >= 65520.0) return false;
  if (std::ldexp(a, 24) != std::floor(std::ldexp(a, 24))) return false;
  if (a < std::ldexp(1.0, -14) || a == 0.0) return true;
  int e;
  const double m = std::frexp(a, &e);
  return std::ldexp(m, 11) == std::floor(std::ldexp(m, 11));
}

// The exact product of two bf16 values, and whether bf16 holds it (the GPU's mul.rn then returns it).
double bf16_product(std::uint16_t a, std::uint16_t b, bool* exact) {
  const double p = static_cast<double>(formats::bf16_to_float(a)) * formats::bf16_to_float(b);
  *exact = static_cast<double>(formats::round_to_bf16(static_cast<float>(p))) == p && std::isfinite(p);
  return p;
}

}  // namespace

// Canonical weights with the codes of scale-0 blocks zeroed: what NVFP4's untile gives back.
std::vector<std::uint8_t> zero_dead_blocks(std::vector<std::uint8_t> w, const std::vector<std::uint8_t>& s, int k) {
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] == 0) std::fill_n(w.begin() + static_cast<std::ptrdiff_t>((i / (k / 16)) * (k / 2) + (i % (k / 16)) * 8), 8, 0);
  return w;
}

TEST(TileLayoutNvfp4, RoundTripsWithSixteenWideGroups) {
  for (const auto& [rows, k, gate_up, f16] : {std::make_tuple(32, 48, false, false), std::make_tuple(64, 208, true, false),
                                              std::make_tuple(16, 2880, false, false), std::make_tuple(32, 48, false, true),
                                              std::make_tuple(64, 208, true, true), std::make_tuple(16, 2880, false, true)}) {
    const TiledShape shape{rows, k, gate_up, 16, f16};
    std::mt19937 rng(static_cast<std::uint32_t>(rows + k));
    std::vector<std::uint8_t> w(static_cast<std::size_t>(rows) * k / 2), s(static_cast<std::size_t>(rows) * k / 16);
    for (auto& b : w) b = static_cast<std::uint8_t>(rng());
    for (auto& b : s) b = static_cast<std::uint8_t>(rng() % 8 == 0 ? 0 : rng() % 0x7F);  // some blocks of scale 0
    const TiledMatrix t = tile_matrix_cpu(w.data(), s.data(), shape);
    EXPECT_EQ(static_cast<std::int64_t>(t.scales.size()), shape.scale_bytes());
    EXPECT_EQ(shape.scale_bytes(), static_cast<std::int64_t>(shape.tiles()) * shape.chunks() * 64);
    std::vector<std::uint8_t> w2(w.size(), 0xAA), s2(s.size(), 0xAA);
    untile_matrix_cpu(t, shape, w2.data(), s2.data());
    EXPECT_EQ(w2, zero_dead_blocks(w, s, k)) << rows << "x" << k;
    EXPECT_EQ(s2, s) << rows << "x" << k;
    int pads = 0;
    for (auto b : t.scales) pads += b == kPadScaleNvfp4;
    if (k % 64) {
      EXPECT_GE(pads, 16 * (4 - (k % 64) / 16)) << "padding groups get the code of 1.0";
    }
  }
}

// One lane of the NVFP4 GEMM: its 8 scale bytes (one 64-bit load at g*8) are the codes of rows g,
// g+8 for the chunk's four k16 steps.
TEST(TileLayoutNvfp4, LaneScalesAreTheRowsAndStepsTheFragmentsHold) {
  const int rows = 32, k = 128;
  for (bool gate_up : {false, true}) {
    const TiledShape shape{rows, k, gate_up, 16};
    std::mt19937 rng(gate_up ? 3 : 4);
    std::vector<std::uint8_t> w(rows * k / 2), s(rows * k / 16);
    for (auto& b : w) b = static_cast<std::uint8_t>(rng());
    for (auto& b : s) b = static_cast<std::uint8_t>(rng() % 0x7F);
    const TiledMatrix t = tile_matrix_cpu(w.data(), s.data(), shape);
    for (int tile = 0; tile < shape.tiles(); ++tile)
      for (int chunk = 0; chunk < shape.chunks(); ++chunk)
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4;
          const std::size_t base = static_cast<std::size_t>(tile) * shape.chunks() + chunk;
          for (int step = 0; step < 4; ++step)
            for (int half = 0; half < 2; ++half) {
              const std::uint8_t lane_byte = t.scales[base * 64 + g * 8 + step * 2 + half];
              const int crow = canonical_row(shape, tile * 16 + g + 8 * half);
              ASSERT_EQ(lane_byte, nvfp4_scale_code(s[static_cast<std::size_t>(crow) * (k / 16) + chunk * 4 + step])) << "lane " << lane;
            }
        }
  }
}

// Every UE4M3 byte: its code round-trips, the one multiply-add gives s x 2^118 (bf16) and s x 2^6
// (fp16) exactly in both halves, and every code times it is v x s x 2^-8, exact in both types.
TEST(DequantNvfp4, EveryCodeTimesEveryScaleIsExactInBf16AndFp16) {
  EXPECT_EQ(nvfp4_scale_code(0), kNvfp4ZeroScaleCode);
  EXPECT_EQ(nvfp4_scale_from_code(kNvfp4ZeroScaleCode), 0);
  EXPECT_EQ(nvfp4_scale_code(0x38), kPadScaleNvfp4);
  for (int byte = 1; byte < 0x7F; ++byte) {  // every positive UE4M3 byte (0x7F is NaN)
    const double s = formats::e4m3_decode(static_cast<std::uint8_t>(byte));
    const std::uint8_t code = nvfp4_scale_code(static_cast<std::uint8_t>(byte));
    ASSERT_LE(code, 143) << byte;
    ASSERT_EQ(nvfp4_scale_from_code(code), byte);
    const std::uint32_t bf = kernels::nvfp4_code_bf16_pair_bits(code), f16 = kernels::nvfp4_code_f16_pair_bits(code);
    ASSERT_EQ(bf >> 16, bf & 0xffffu);
    ASSERT_EQ(f16 >> 16, f16 & 0xffffu);
    const double lifted = formats::bf16_to_float(static_cast<std::uint16_t>(bf));
    const double lifted16 = f16_value(static_cast<std::uint16_t>(f16));
    ASSERT_EQ(lifted, std::ldexp(s, 118)) << byte;
    ASSERT_EQ(lifted16, std::ldexp(s, 6)) << byte;
    for (int c = 0; c < 16; ++c) {
      const double v = formats::e2m1_decode(static_cast<std::uint8_t>(c));
      const double want = v * s * std::ldexp(1.0, -kernels::kNvfp4Fold);
      const std::uint32_t word = fragment_word(c * 0x11u, c * 0x11u, c * 0x11u, c * 0x11u);
      const std::uint32_t word16 = fragment_word(c * 0x11u, c * 0x11u, c * 0x11u, c * 0x11u, /*f16=*/true);
      const double got = static_cast<double>(formats::bf16_to_float(static_cast<std::uint16_t>(kernels::e2m1_pair_bits<0>(word)))) * lifted;
      ASSERT_EQ(got, want);
      ASSERT_EQ(static_cast<double>(formats::round_to_bf16(static_cast<float>(got))), got) << "bf16 holds v s 2^-8";
      const double got16 = f16_value(static_cast<std::uint16_t>(kernels::e2m1_pair_bits_f16<3>(word16))) * lifted16;
      ASSERT_EQ(got16, want);
      ASSERT_TRUE(f16_holds(got16)) << "byte " << byte << " code " << c;
    }
  }
  // The zero-scale code decodes to a finite value (its block's codes are zero, so its weights are 0).
  EXPECT_TRUE(std::isfinite(formats::bf16_to_float(static_cast<std::uint16_t>(kernels::nvfp4_code_bf16_pair_bits(kNvfp4ZeroScaleCode)))));
  EXPECT_TRUE(std::isfinite(f16_value(static_cast<std::uint16_t>(kernels::nvfp4_code_f16_pair_bits(kNvfp4ZeroScaleCode)))));
}

TEST(DequantNvfp4, Fp16BitTrickCoversEveryCodeInEveryRegister) {
  for (int trial = 0; trial < 256; ++trial) {
    std::uint32_t bytes[4];
    for (int r = 0; r < 4; ++r) bytes[r] = static_cast<std::uint32_t>((trial * 37 + r * 91 + 13) & 0xff);
    const std::uint32_t word = fragment_word(bytes[0], bytes[1], bytes[2], bytes[3], /*f16=*/true);
    const std::uint32_t regs[4] = {kernels::e2m1_pair_bits_f16<0>(word), kernels::e2m1_pair_bits_f16<1>(word),
                                   kernels::e2m1_pair_bits_f16<2>(word), kernels::e2m1_pair_bits_f16<3>(word)};
    for (int r = 0; r < 4; ++r)
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t code = static_cast<std::uint8_t>((bytes[r] >> (4 * half)) & 15u);
        ASSERT_EQ(f16_value(static_cast<std::uint16_t>(regs[r] >> (16 * half))) * std::ldexp(1.0, 14), formats::e2m1_decode(code))
            << "register " << r << " half " << half;
      }
  }
}

// Mxfp4Wide: v 2^-126 x first x second is v 2^(b-127) for every byte 0..254 and every code, each
// multiply exact (or, for the overflowing products of bytes 253/254, infinite as the float value is).
TEST(DequantWide, EveryE8m0ByteAndCodeIsExact) {
  for (int b = 0; b <= 254; ++b) {
    const kernels::ScalePairBits f = kernels::e8m0_wide_scale_pair_bits(static_cast<std::uint32_t>(b));
    if (b <= kernels::kMaxFastScaleByte) {
      EXPECT_EQ(f.first, kernels::e8m0_scale_pair_bits(static_cast<std::uint32_t>(b)));
    }
    for (int code = 0; code < 16; ++code) {
      const std::uint32_t word = fragment_word(code * 0x11u, code * 0x11u, code * 0x11u, code * 0x11u);
      const std::uint16_t nib = static_cast<std::uint16_t>(kernels::e2m1_pair_bits<1>(word));
      bool exact = false;
      const double once = bf16_product(nib, static_cast<std::uint16_t>(f.first), &exact);
      ASSERT_TRUE(exact) << "byte " << b << " code " << code;
      const double want = formats::e2m1_decode(static_cast<std::uint8_t>(code)) * std::ldexp(1.0, b - 127);
      const double twice = static_cast<double>(formats::bf16_to_float(formats::float_to_bf16(static_cast<float>(once)))) *
                           formats::bf16_to_float(static_cast<std::uint16_t>(f.second));
      const float as_float = static_cast<float>(want);
      if (std::isinf(as_float)) {
        EXPECT_TRUE(std::isinf(formats::round_to_bf16(static_cast<float>(twice)))) << "byte " << b << " code " << code;
      } else {
        ASSERT_EQ(twice, want) << "byte " << b << " code " << code;
        ASSERT_EQ(static_cast<double>(formats::round_to_bf16(static_cast<float>(twice))), want) << "bf16 holds it";
      }
    }
  }
}

// The fp16 placement is a permutation too (each half's 16 bits used once), and the lane simulation
// of the GEMM decodes every A element of a random NVFP4 matrix to its canonical value.
TEST(TileLayoutNvfp4, Fp16LaneFragmentsDecodeToTheCanonicalValues) {
  int used = 0;
  for (int reg = 0; reg < 4; ++reg) used |= static_cast<int>(place_element(15u, reg, 0, true));
  EXPECT_EQ(used, 0xFFFF);
  const int rows = 32, k = 128, I = rows / 2;
  for (bool gate_up : {false, true}) {
    const TiledShape shape{rows, k, gate_up, 16, true};
    std::mt19937 rng(gate_up ? 21 : 22);
    std::vector<std::uint8_t> w(rows * k / 2), s(rows * k / 16);
    for (auto& b : w) b = static_cast<std::uint8_t>(rng());
    for (auto& b : s) b = static_cast<std::uint8_t>(1 + rng() % 0x7E);
    const TiledMatrix t = tile_matrix_cpu(w.data(), s.data(), shape);
    for (int tile = 0; tile < shape.tiles(); ++tile)
      for (int chunk = 0; chunk < shape.chunks(); ++chunk)
        for (int lane = 0; lane < 32; ++lane)
          for (int step = 0; step < 4; ++step) {
            std::uint32_t word;
            std::memcpy(&word, &t.weights[(static_cast<std::size_t>(tile) * shape.chunks() + chunk) * 512 + lane * 16 + step * 4], 4);
            const std::uint32_t regs[4] = {kernels::e2m1_pair_bits_f16<0>(word), kernels::e2m1_pair_bits_f16<1>(word),
                                           kernels::e2m1_pair_bits_f16<2>(word), kernels::e2m1_pair_bits_f16<3>(word)};
            for (int r = 0; r < 4; ++r)
              for (int half = 0; half < 2; ++half) {
                const int prow = tile * 16 + lane / 4 + 8 * (r & 1);
                const int kk = chunk * 64 + step * 16 + 2 * (lane % 4) + 8 * (r >> 1) + half;
                const int crow = gate_up ? (prow % 16 < 8 ? 8 * tile + prow % 16 : I + 8 * tile + prow % 16 - 8) : prow;
                const std::uint8_t code = formats::nibble_at(&w[static_cast<std::size_t>(crow) * (k / 2)], kk);
                ASSERT_EQ(f16_value(static_cast<std::uint16_t>(regs[r] >> (16 * half))) * std::ldexp(1.0, 14), formats::e2m1_decode(code))
                    << "tile " << tile << " lane " << lane << " step " << step << " register " << r;
              }
          }
  }
}

TEST(DequantWide, TheAbove128TestAgreesWithEveryByte) {
  for (int b = 0; b < 256; ++b)
    for (int pos = 0; pos < 4; ++pos) {
      const std::uint32_t word = (0x7F7F7F7Fu & ~(0xFFu << (8 * pos))) | static_cast<std::uint32_t>(b) << (8 * pos);
      ASSERT_EQ(kernels::any_scale_byte_above_128(word), b > 128) << "byte " << b << " at " << pos;
    }
  EXPECT_FALSE(kernels::any_scale_byte_above_128(0x80808080u));
  EXPECT_TRUE(kernels::any_scale_byte_above_128(0x00810000u));
}
