// Mxfp4Shifted's per-row E8M0 shift (src/prepare/scale_shift.hpp): the spans and shifts, the format
// they pick, that the prepared bytes (CPU twin of prepare) dequantised with the kernels' bit functions
// and multiplied by the row's factor give the oracle's values exactly, and why the shift is per row
// (a per-(expert, matrix half) shift underflows the fp32 products of a row with smaller bytes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "formats/bf16.hpp"
#include "formats/mxfp4.hpp"
#include "kernels/dequant.hpp"
#include "kernels/moe_gemm.hpp"
#include "prepare/prepare_cpu.hpp"
#include "prepare/scale_shift.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using mxmoe::test::expect_error;

namespace {

// Canonical E8M0 scales of a layer: w13 [E, 2I, H/32] and w2 [E, H, I/32], every byte `fill`.
struct Scales {
  int E, H, I;
  std::vector<std::uint8_t> w13, w2;
  Scales(int e, int h, int i, std::uint8_t fill)
      : E(e), H(h), I(i), w13(static_cast<std::size_t>(e) * 2 * i * (h / 32), fill), w2(static_cast<std::size_t>(e) * h * (i / 32), fill) {}
  // Row r of expert e (canonical order: w13 gate rows 0..I-1, up rows I..2I-1; w2 rows 0..H-1).
  std::uint8_t* w13_row(int e, int r) { return w13.data() + (static_cast<std::size_t>(e) * 2 * I + r) * (H / 32); }
  std::uint8_t* w2_row(int e, int r) { return w2.data() + (static_cast<std::size_t>(e) * H + r) * (I / 32); }
  prepare::E8m0Shifts shifts() const { return prepare::e8m0_shifts(w13.data(), w2.data(), E, H, I); }
  std::vector<std::uint8_t> shifted13(const prepare::E8m0Shifts& r) const {
    return prepare::shift_scales(w13.data(), E, 2 * I, H / 32, r.w13.data());
  }
  std::vector<std::uint8_t> shifted2(const prepare::E8m0Shifts& r) const {
    return prepare::shift_scales(w2.data(), E, H, I / 32, r.w2.data());
  }
};

kernels::GemmFormat format_of(const prepare::E8m0Shifts& s) { return kernels::choose_gemm_format(32, false, s.summary); }

// The kernels' nibble values: code -> v x 2^-126 as bf16 (register 0 of a word of that code).
float kernel_nibble(int code) {
  return formats::bf16_to_float(static_cast<std::uint16_t>(
      kernels::e2m1_pair_bits<0>(tiling::fragment_word(code * 0x11u, code * 0x11u, code * 0x11u, code * 0x11u))));
}
// The kernels' scale of a prepared byte (0..128): 2^(b - 1) as bf16, so nibble x scale = v x 2^(b-127).
float kernel_scale(int prepared) {
  return formats::bf16_to_float(static_cast<std::uint16_t>(kernels::e8m0_scale_pair_bits(static_cast<std::uint32_t>(prepared))));
}

}  // namespace

TEST(ScaleShift, ShiftsPerRowAndTheFormatTheyPick) {
  Scales s(3, 64, 64, 127);  // w13 rows of 2 groups, w2 rows of 2 groups
  auto r = s.shifts();
  EXPECT_EQ(r.summary.max_byte, 127);
  EXPECT_EQ(r.summary.max_shifted_span, 0);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4);
  EXPECT_EQ(r.w13, std::vector<std::uint8_t>(3 * 2 * 64, 0));
  EXPECT_EQ(r.w2, std::vector<std::uint8_t>(3 * 64, 0));

  s.w13_row(1, 5)[0] = 200;  // expert 1, gate row 5: 72..200 (span 128) -> d = 72
  s.w13_row(1, 5)[1] = 72;
  s.w13_row(1, 64 + 3)[1] = 129;  // expert 1, up row 3: 127..129 -> d = 1
  s.w2_row(2, 17)[0] = 254;       // expert 2, w2 row 17: 127..254 (span 127) -> d = 126
  s.w2_row(2, 18)[1] = 0;         // a low byte in another row of the same matrix: no shift, no span counted
  s.w13_row(0, 3)[0] = 0;         // a low byte in a row with nothing above 128: no shift, no span counted
  r = s.shifts();
  EXPECT_EQ(r.summary.max_byte, 254);
  EXPECT_EQ(r.summary.max_shifted_span, 128);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Shifted);
  std::vector<std::uint8_t> want13(3 * 2 * 64, 0), want2(3 * 64, 0);
  want13[1 * 128 + 5] = 72;
  want13[1 * 128 + 64 + 3] = 1;
  want2[2 * 64 + 17] = 126;
  EXPECT_EQ(r.w13, want13);
  EXPECT_EQ(r.w2, want2);
  const std::vector<float> f13 = r.w13_factors(), f2 = r.w2_factors();
  ASSERT_EQ(f13.size(), 3u * 2 * 64);
  ASSERT_EQ(f2.size(), 3u * 64);
  EXPECT_EQ(f13[1 * 128 + 5], std::ldexp(1.0f, 72));
  EXPECT_EQ(f13[1 * 128 + 4], 1.0f) << "the next gate row keeps its bytes";
  EXPECT_EQ(f13[1 * 128 + 64 + 3], 2.0f);
  EXPECT_EQ(f13[0], 1.0f);
  EXPECT_EQ(f2[2 * 64 + 17], std::ldexp(1.0f, 126));
  EXPECT_EQ(f2[2 * 64 + 18], 1.0f);

  const auto w13 = s.shifted13(r), w2 = s.shifted2(r);
  EXPECT_EQ(*std::max_element(w13.begin(), w13.end()), 128);
  EXPECT_EQ(*std::max_element(w2.begin(), w2.end()), 128);
  auto at13 = [&](int e, int row, int g) { return w13[(static_cast<std::size_t>(e) * 128 + row) * 2 + g]; };
  auto at2 = [&](int e, int row, int g) { return w2[(static_cast<std::size_t>(e) * 64 + row) * 2 + g]; };
  EXPECT_EQ(at13(1, 5, 0), 128);
  EXPECT_EQ(at13(1, 5, 1), 0);
  EXPECT_EQ(at13(1, 4, 0), 127) << "a row without bytes above 128 is not lowered";
  EXPECT_EQ(at13(1, 64 + 3, 1), 128);
  EXPECT_EQ(at13(1, 64 + 3, 0), 126);
  EXPECT_EQ(at13(0, 3, 0), 0) << "expert 0's gate row 3: unshifted";
  EXPECT_EQ(at2(2, 17, 0), 128);
  EXPECT_EQ(at2(2, 17, 1), 1);
  EXPECT_EQ(at2(2, 18, 1), 0) << "w2 row 18 is not lowered by row 17's shift";
  EXPECT_EQ(at2(2, 18, 0), 127);
}

// The pathological case is a ROW holding a byte above 128 and spanning more than 128 bytes (2^128
// within one row): it cannot be shifted and leaves the layer on Mxfp4Wide. The same bytes in two
// different rows of one matrix half shift fine.
TEST(ScaleShift, OnlyARowSpanningMoreThan128LeavesTheLayerOnMxfp4Wide) {
  Scales s(2, 64, 64, 127);
  s.w13_row(1, 5)[0] = 200;
  s.w13_row(1, 5)[1] = 71;  // one row: 71..200, span 129
  auto r = s.shifts();
  EXPECT_EQ(r.summary.max_shifted_span, 129);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Wide);
  expect_error([&] { s.shifted13(r); }, ErrorCode::InvalidArgument, "expert 1, row 5 lies below the row's shift 72");

  s.w13_row(1, 5)[1] = 72;  // span 128: shifts
  r = s.shifts();
  EXPECT_EQ(r.summary.max_shifted_span, 128);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Shifted);

  // 0 and 254 in one matrix half but in different rows: each row spans at most 128.
  s.w2_row(0, 1)[0] = 254;
  s.w2_row(0, 2)[1] = 0;
  s.w13_row(0, 64)[0] = 0;  // up row 0 of expert 0: 0..127, no shift
  s.w13_row(0, 65)[0] = 250;
  r = s.shifts();
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Shifted) << "the old per-half rule would have needed Mxfp4Wide";
  EXPECT_EQ(r.summary.max_shifted_span, 128);
  EXPECT_EQ(r.w2[1], 126);
  EXPECT_EQ(r.w2[2], 0);
  EXPECT_EQ(r.w13[64], 0);
  EXPECT_EQ(r.w13[65], 122);

  s.w2_row(0, 1)[1] = 125;  // 125..254 in one row: span 129
  r = s.shifts();
  EXPECT_EQ(r.summary.max_shifted_span, 129);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Wide);
  expect_error([&] { s.shifted2(r); }, ErrorCode::InvalidArgument, "expert 0, row 1 lies below the row's shift 126");
}

// Why the shift is per row (the GPU failure of WideScales/w13_tiny_w2_huge): the tensor core forms
// each product (prepared weight x bf16 intermediate) and accumulates in fp32, and only then does the
// epilogue multiply by 2^d. With tiny intermediates (~2^-111, from w13 scales near 2^-127) and a w2
// row whose bytes are ~150 in a matrix whose largest byte is 254, the half's shift d = 126 lowers the
// row to bytes ~24: weights ~2^-103, products ~2^-214, far below fp32's smallest subnormal 2^-149, so
// the row's dot product is 0 (x 2^126 is still 0) where the canonical products ~2^-88 are normal. The
// row's own shift (22) leaves its largest byte at 128: products ~2^-110, the same sum as float64.
TEST(ScaleShift, PerHalfShiftUnderflowsARowThatPerRowShiftKeepsExact) {
  const int H = 64, I = 64;
  Scales s(1, H, I, 127);
  s.w2_row(0, 0)[0] = 150;  // the row under test: bytes 150 and 152
  s.w2_row(0, 0)[1] = 152;
  s.w2_row(0, 1)[0] = 254;  // another row of the same matrix: the half's largest byte
  s.w2_row(0, 1)[1] = 200;
  const prepare::E8m0Shifts r = s.shifts();
  ASSERT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Shifted);
  ASSERT_EQ(r.w2[0], 24) << "row 0's own shift: 152 - 128";
  const int half_d = 254 - 128;  // the per-(expert, half) rule: the matrix's largest byte - 128
  const auto per_row = s.shifted2(r);

  std::mt19937 rng(11);
  std::vector<int> codes(I);
  std::vector<float> act(I);
  for (int k = 0; k < I; ++k) {
    codes[k] = 1 + static_cast<int>(rng() % 7) + (rng() % 2 ? 8 : 0);  // nonzero E2M1 codes, both signs
    // bf16 intermediates 2^-112..2^-110, what w13 scales 2^-127..2^-97 make of the hidden states
    act[k] = formats::round_to_bf16(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -112 + static_cast<int>(rng() % 2)));
    ASSERT_GE(std::fabs(act[k]), std::ldexp(1.0f, -126)) << "a normal intermediate";
  }
  // The emulated tensor-core dot product of row 0 with prepared bytes `prepared(k)` and the epilogue's factor.
  auto gpu_row = [&](auto prepared, float factor) {
    float acc = 0.0f;
    for (int k = 0; k < I; ++k) {
      const float w = kernel_nibble(codes[k]) * kernel_scale(prepared(k));  // the exact bf16 multiply
      EXPECT_EQ(formats::round_to_bf16(w), w);
      acc += w * act[k];  // the fp32 product and sum
    }
    return acc * factor;
  };
  double want = 0.0, abs_sum = 0.0;  // float64: canonical weight x intermediate
  for (int k = 0; k < I; ++k) {
    const double t = static_cast<double>(formats::mxfp4_dequantize(static_cast<std::uint8_t>(codes[k]), s.w2_row(0, 0)[k / 32])) * act[k];
    want += t;
    abs_sum += std::fabs(t);
  }
  ASSERT_NE(want, 0.0);
  ASSERT_GT(std::fabs(want), std::ldexp(1.0, -100)) << "the canonical products are normal fp32";

  const float by_half = gpu_row([&](int k) { return s.w2_row(0, 0)[k / 32] - half_d; }, prepare::shift_factor(half_d));
  EXPECT_EQ(by_half, 0.0f) << "per-half: the products 2^-214 underflow fp32";

  const float by_row = gpu_row([&](int k) { return per_row[k / 32]; }, r.w2_factors()[0]);
  EXPECT_NE(by_row, 0.0f);
  EXPECT_NEAR(by_row, want, abs_sum * 1e-6) << "per-row: the fp32 sum of normal products";
}

TEST(ScaleShift, FactorsAreExactPowersOfTwo) {
  for (int d = 0; d <= 127; ++d) EXPECT_EQ(prepare::shift_factor(d), std::ldexp(1.0f, d)) << d;
  expect_error([] { prepare::shift_factor(128); }, ErrorCode::InvalidArgument, "0..127");
  expect_error([] { prepare::shift_factor(-1); }, ErrorCode::InvalidArgument, "0..127");
}

// For every largest byte m (0..254) and rows cycling through every byte their window then allows
// (m - 128..m), with a different top per row, the prepared byte goes through the CPU twin of prepare
// (tile, and back through the independent inverse), reads as the kernels read it (e2m1_pair_bits x
// e8m0_scale_pair_bits, one exact bf16 multiply) and, times the row's fp32 factor, equals the oracle's
// value (mxfp4_dequantize) bit for bit, infinities (bytes 253, 254 under large codes) included.
TEST(ScaleShift, PreparedBytesTimesTheFactorAreTheCanonicalValues) {
  const int E = 2, H = 192, I = 64;
  float nibble[16];
  for (int code = 0; code < 16; ++code) nibble[code] = kernel_nibble(code);
  std::mt19937 rng(5);
  std::vector<std::uint8_t> w13(static_cast<std::size_t>(E) * 2 * I * H / 2), w2(static_cast<std::size_t>(E) * H * I / 2);
  for (auto& b : w13) b = static_cast<std::uint8_t>(rng());
  for (auto& b : w2) b = static_cast<std::uint8_t>(rng());
  const tiling::TiledShape s13{2 * I, H, true}, s2{H, I, false};
  long checked = 0;
  for (int m = 0; m <= 254; ++m) {
    Scales s(E, H, I, 100);
    // Row r of a matrix cycles through the window [max(0, top - 128), top] of its own top, every top
    // reached with m: tops m, 254 - m, (m * 7) % 255, m / 2 and 254 in turn; a w13 row has 6 groups,
    // a w2 row 2, so the bytes of one window are spread over consecutive rows (each row's first byte
    // is its top).
    auto fill_rows = [&](std::uint8_t* p, int rows, int groups, int salt) {
      const int tops[5] = {m, 254 - m, (m * 7) % 255, m / 2, 254};
      for (int row = 0; row < rows; ++row) {
        const int top = tops[(row + salt) % 5], lo = std::max(0, top - 128), count = top - lo + 1;
        std::uint8_t* q = p + static_cast<std::size_t>(row) * groups;
        for (int g = 0; g < groups; ++g) q[g] = static_cast<std::uint8_t>(lo + (row * groups + g + salt) % count);
        q[0] = static_cast<std::uint8_t>(top);
        if (groups > 1 && row % 3 == 0) q[1] = static_cast<std::uint8_t>(lo);  // the row's full span
      }
    };
    for (int e = 0; e < E; ++e) {
      fill_rows(s.w13_row(e, 0), 2 * I, H / 32, 3 * e);
      fill_rows(s.w2_row(e, 0), H, I / 32, 3 * e + 1);
    }
    const prepare::E8m0Shifts r = s.shifts();
    ASSERT_EQ(format_of(r), r.summary.max_byte > 128 ? kernels::GemmFormat::Mxfp4Shifted : kernels::GemmFormat::Mxfp4) << m;
    const auto p13 = s.shifted13(r), p2 = s.shifted2(r);
    const std::vector<float> f13 = r.w13_factors(), f2 = r.w2_factors();
    for (int e = 0; e < E; ++e) {
      for (int mat = 0; mat < 2; ++mat) {
        const tiling::TiledShape& shape = mat == 0 ? s13 : s2;
        const std::size_t wb = static_cast<std::size_t>(shape.rows) * shape.k / 2, sb = static_cast<std::size_t>(shape.rows) * shape.groups();
        const std::uint8_t* cw = (mat == 0 ? w13.data() : w2.data()) + e * wb;
        const std::uint8_t* cs = (mat == 0 ? s.w13.data() : s.w2.data()) + e * sb;
        const tiling::TiledMatrix tiled = tiling::tile_matrix_cpu(cw, (mat == 0 ? p13.data() : p2.data()) + e * sb, shape);
        std::vector<std::uint8_t> uw(wb), us(sb);
        tiling::untile_matrix_cpu(tiled, shape, uw.data(), us.data());
        ASSERT_TRUE(std::equal(uw.begin(), uw.end(), cw)) << "m " << m;
        for (int row = 0; row < shape.rows; ++row) {
          const float factor = (mat == 0 ? f13 : f2)[static_cast<std::size_t>(e) * shape.rows + row];
          for (int k = 0; k < shape.k; ++k) {
            const int g = k / 32;
            const std::uint8_t byte = cs[row * shape.groups() + g], prepared = us[row * shape.groups() + g];
            ASSERT_LE(prepared, kernels::kMaxFastScaleByte);
            const std::uint8_t code = static_cast<std::uint8_t>((uw[row * (shape.k / 2) + k / 2] >> (4 * (k & 1))) & 15u);
            const float scale = kernel_scale(prepared);
            const float once = nibble[code] * scale;  // the kernel's bf16 multiply: exact
            ASSERT_EQ(formats::round_to_bf16(once), once) << "byte " << int(byte) << " code " << int(code);
            const float got = once * factor, want = formats::mxfp4_dequantize(code, byte);
            ASSERT_TRUE(got == want || (std::isinf(got) && std::isinf(want) && (got > 0) == (want > 0)))
                << "m " << m << " expert " << e << (mat ? " w2" : " w13") << " row " << row << " byte " << int(byte)
                << " prepared " << int(prepared) << " code " << int(code) << ": " << got << " vs " << want;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}
