// Mxfp4Shifted's per-(expert, matrix half) E8M0 shift (src/prepare/scale_shift.hpp): the spans and
// shifts, the format they pick, and that the prepared bytes (CPU twin of prepare) dequantised with the
// kernels' bit functions and multiplied by the factor give the oracle's values exactly.
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
  std::size_t half13() const { return static_cast<std::size_t>(I) * (H / 32); }
  std::size_t half2() const { return static_cast<std::size_t>(H) * (I / 32); }
  std::uint8_t* gate(int e) { return w13.data() + (2 * e) * half13(); }
  std::uint8_t* up(int e) { return w13.data() + (2 * e + 1) * half13(); }
  std::uint8_t* down(int e) { return w2.data() + e * half2(); }
  prepare::E8m0Shifts shifts() const { return prepare::e8m0_shifts(w13.data(), w2.data(), E, H, I); }
};

kernels::GemmFormat format_of(const prepare::E8m0Shifts& s) { return kernels::choose_gemm_format(32, false, s.summary); }

}  // namespace

TEST(ScaleShift, ShiftsPerExpertAndHalfAndTheFormatTheyPick) {
  Scales s(3, 64, 64, 127);
  auto r = s.shifts();
  EXPECT_EQ(r.summary.max_byte, 127);
  EXPECT_EQ(r.summary.max_shifted_span, 0);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4);
  EXPECT_EQ(r.w13, std::vector<std::uint8_t>(6, 0));
  EXPECT_EQ(r.w2, std::vector<std::uint8_t>(3, 0));

  s.gate(1)[5] = 200;  // expert 1's gate half: 72..200 (span 128) -> d = 72
  s.gate(1)[9] = 72;
  s.up(1)[0] = 129;    // up half: 127..129 -> d = 1
  s.down(2)[17] = 254; // expert 2's w2: 127..254 (span 127) -> d = 126
  s.gate(0)[3] = 0;    // a low byte in a half with nothing above 128: no shift, no span counted
  r = s.shifts();
  EXPECT_EQ(r.summary.max_byte, 254);
  EXPECT_EQ(r.summary.max_shifted_span, 128);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Shifted);
  EXPECT_EQ(r.w13, (std::vector<std::uint8_t>{0, 0, 72, 1, 0, 0}));
  EXPECT_EQ(r.w2, (std::vector<std::uint8_t>{0, 0, 126}));
  const std::vector<float> f13 = r.w13_factors(), f2 = r.w2_factors();
  EXPECT_EQ(f13[2], std::ldexp(1.0f, 72));
  EXPECT_EQ(f13[3], 2.0f);
  EXPECT_EQ(f13[0], 1.0f);
  EXPECT_EQ(f2[2], std::ldexp(1.0f, 126));

  const auto w13 = prepare::shift_scales(s.w13.data(), s.E, 2 * s.I, s.H / 32, r.w13.data(), 2);
  const auto w2 = prepare::shift_scales(s.w2.data(), s.E, s.H, s.I / 32, r.w2.data(), 1);
  EXPECT_EQ(*std::max_element(w13.begin(), w13.end()), 128);
  EXPECT_EQ(*std::max_element(w2.begin(), w2.end()), 128);
  EXPECT_EQ(w13[(2 * 1) * s.half13() + 5], 128);
  EXPECT_EQ(w13[(2 * 1) * s.half13() + 9], 0);
  EXPECT_EQ(w13[(2 * 1) * s.half13() + 0], 127 - 72);
  EXPECT_EQ(w13[(2 * 1 + 1) * s.half13() + 0], 128);
  EXPECT_EQ(w13[(2 * 1 + 1) * s.half13() + 1], 126);
  EXPECT_EQ(w13[3], 0) << "expert 0's gate: unshifted";
  EXPECT_EQ(w2[2 * s.half2() + 17], 128);
  EXPECT_EQ(w2[2 * s.half2() + 16], 1);

  // One byte lower in expert 1's gate half: span 129, 2^129 between two of its blocks: Mxfp4Wide.
  s.gate(1)[9] = 71;
  r = s.shifts();
  EXPECT_EQ(r.summary.max_shifted_span, 129);
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Wide);
  expect_error([&] { prepare::shift_scales(s.w13.data(), s.E, 2 * s.I, s.H / 32, r.w13.data(), 2); },
               ErrorCode::InvalidArgument, "below the half's shift 72");

  // The span counts only within a half: 0 in expert 1's up half, 200 in its gate half.
  s.gate(1)[9] = 72;
  s.up(1)[7] = 0;
  r = s.shifts();
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Wide) << "the up half holds 129 and 0";
  s.up(1)[0] = 127;
  r = s.shifts();
  EXPECT_EQ(format_of(r), kernels::GemmFormat::Mxfp4Shifted) << "the up half 0..127 needs no shift";
  EXPECT_EQ(r.w13[3], 0);
}

TEST(ScaleShift, FactorsAreExactPowersOfTwo) {
  for (int d = 0; d <= 127; ++d) EXPECT_EQ(prepare::shift_factor(d), std::ldexp(1.0f, d)) << d;
  expect_error([] { prepare::shift_factor(128); }, ErrorCode::InvalidArgument, "0..127");
  expect_error([] { prepare::shift_factor(-1); }, ErrorCode::InvalidArgument, "0..127");
}

// For every largest byte m of a half (0..254) and every byte the half can then hold (m - 128..m), the
// prepared byte goes through the CPU twin of prepare (tile, and back through the independent
// inverse), reads as the kernels read it (e2m1_pair_bits x e8m0_scale_pair_bits, one exact bf16
// multiply) and, times the half's fp32 factor, equals the oracle's value (mxfp4_dequantize) bit for
// bit, infinities (bytes 253, 254 under large codes) included.
TEST(ScaleShift, PreparedBytesTimesTheFactorAreTheCanonicalValues) {
  const int E = 2, H = 192, I = 64;
  // The kernels' nibble values: code -> v x 2^-126 as bf16 (register 0 of a word of that code).
  float nibble[16];
  for (int code = 0; code < 16; ++code)
    nibble[code] = formats::bf16_to_float(static_cast<std::uint16_t>(
        kernels::e2m1_pair_bits<0>(tiling::fragment_word(code * 0x11u, code * 0x11u, code * 0x11u, code * 0x11u))));
  std::mt19937 rng(5);
  std::vector<std::uint8_t> w13(static_cast<std::size_t>(E) * 2 * I * H / 2), w2(static_cast<std::size_t>(E) * H * I / 2);
  for (auto& b : w13) b = static_cast<std::uint8_t>(rng());
  for (auto& b : w2) b = static_cast<std::uint8_t>(rng());
  const tiling::TiledShape s13{2 * I, H, true}, s2{H, I, false};
  long checked = 0;
  for (int m = 0; m <= 254; ++m) {
    Scales s(E, H, I, 100);
    // Each half cycles through every byte of its window [max(0, top - 128), top] (top included), with
    // different tops: m for expert 0's gate, 254 - m for its up, (m * 7) % 255 for its w2, and m / 2,
    // m, 254 for expert 1's.
    auto fill = [&](std::uint8_t* p, std::size_t n, int top, int offset) {
      const int lo = std::max(0, top - 128), count = top - lo + 1;
      for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>(lo + (static_cast<int>(i) + offset) % count);
      p[n / 2] = static_cast<std::uint8_t>(top);
    };
    fill(s.gate(0), s.half13(), m, 0);
    fill(s.up(0), s.half13(), 254 - m, 3);
    fill(s.down(0), s.half2(), (m * 7) % 255, 5);
    fill(s.gate(1), s.half13(), m / 2, 1);
    fill(s.up(1), s.half13(), m, 7);
    fill(s.down(1), s.half2(), 254, m);
    const prepare::E8m0Shifts r = s.shifts();
    ASSERT_EQ(format_of(r), r.summary.max_byte > 128 ? kernels::GemmFormat::Mxfp4Shifted : kernels::GemmFormat::Mxfp4) << m;
    const auto p13 = prepare::shift_scales(s.w13.data(), E, 2 * I, H / 32, r.w13.data(), 2);
    const auto p2 = prepare::shift_scales(s.w2.data(), E, H, I / 32, r.w2.data(), 1);
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
          const float factor = mat == 0 ? f13[2 * e + (row >= I)] : f2[e];
          for (int k = 0; k < shape.k; ++k) {
            const int g = k / 32;
            const std::uint8_t byte = cs[row * shape.groups() + g], prepared = us[row * shape.groups() + g];
            ASSERT_LE(prepared, kernels::kMaxFastScaleByte);
            const std::uint8_t code = static_cast<std::uint8_t>((uw[row * (shape.k / 2) + k / 2] >> (4 * (k & 1))) & 15u);
            const float scale = formats::bf16_to_float(static_cast<std::uint16_t>(kernels::e8m0_scale_pair_bits(prepared)));
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
