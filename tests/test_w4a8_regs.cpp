// W4A8's register conversion (src/kernels/w4a8_regs.hpp): a prepared word of eight E2M1 codes and
// its (row, group)'s magnitude table give exactly the fold's E4M3 bytes
// (formats::e4m3_of_e2m1(code, shift), which prepare/w4a8_fold.hpp's fold_element is), for every code
// in every byte of both registers and every shift the fold produces (the exact ones -8..6, the
// re-quantised ones below, which the table clamps at kMinTableShift).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/tile_layout_w4a8.hpp"
#include "kernels/w4a8_regs.hpp"
#include "prepare/w4a8_fold.hpp"

using namespace mxmoe;
using namespace mxmoe::kernels::w4a8;

TEST(W4a8Registers, EveryCodeInEveryByteAtEveryShiftIsTheFoldsByte) {
  std::mt19937 rng(11);
  for (int shift = -40; shift <= mxmoe::w4a8::kMaxShift; ++shift) {
    const MagnitudeTable table = magnitude_table(shift);
    for (int pos = 0; pos < 8; ++pos)
      for (int code = 0; code < 16; ++code)
        for (int trial = 0; trial < 4; ++trial) {
          std::uint8_t a[4], b[4];
          for (int j = 0; j < 4; ++j) {
            a[j] = static_cast<std::uint8_t>(rng() % 16);
            b[j] = static_cast<std::uint8_t>(rng() % 16);
          }
          (pos < 4 ? a[pos] : b[pos - 4]) = static_cast<std::uint8_t>(code);
          std::uint32_t ra = 0, rb = 0;
          e4m3_registers(prepared_word(a, b), table, ra, rb);
          for (int j = 0; j < 4; ++j) {
            ASSERT_EQ((ra >> (8 * j)) & 0xffu, mxmoe::w4a8::fold_element(a[j], shift)) << "A byte " << j << " code " << int(a[j]) << " shift " << shift;
            ASSERT_EQ((rb >> (8 * j)) & 0xffu, mxmoe::w4a8::fold_element(b[j], shift)) << "B byte " << j << " code " << int(b[j]) << " shift " << shift;
          }
        }
  }
}

// The word is a permutation of the codes' 32 bits: distinct code sets give distinct words, and each
// code's four bits sit at their documented places.
// The GEMM's constant tables are magnitude_table's, shift by shift.
TEST(W4a8Registers, ConstantTablesAreTheComputedOnes) {
  for (int i = 0; i < kTableShifts; ++i) {
    const MagnitudeTable t = magnitude_table(i + kMinTableShift);
    EXPECT_EQ(kMagnitudeTables[i][0], t.lo) << "shift " << i + kMinTableShift;
    EXPECT_EQ(kMagnitudeTables[i][1], t.hi) << "shift " << i + kMinTableShift;
  }
}

TEST(W4a8Registers, PreparedWordPlacesEveryBitOnce) {
  for (int pos = 0; pos < 8; ++pos)
    for (int bit = 0; bit < 4; ++bit) {
      std::uint8_t a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
      (pos < 4 ? a[pos] : b[pos - 4]) = static_cast<std::uint8_t>(1u << bit);
      const std::uint32_t w = prepared_word(a, b);
      ASSERT_EQ(__builtin_popcount(w), 1) << "code " << pos << " bit " << bit;
      const int j = pos % 4;
      const int expect = bit == 3 ? (pos < 4 ? 8 * j + 7 : 8 * j + 3) : (pos < 4 ? 4 * j + bit : 16 + 4 * j + bit);
      EXPECT_EQ(w, 1u << expect) << "code " << pos << " bit " << bit;
    }
}

TEST(W4a8Registers, TablesClampWhereEveryMagnitudeRoundsToZero) {
  EXPECT_EQ(table_index(-100), 0);
  EXPECT_EQ(table_index(kMinTableShift), 0);
  EXPECT_EQ(table_index(kMaxTableShift), kTableShifts - 1);
  const MagnitudeTable floor = magnitude_table(kMinTableShift);
  EXPECT_EQ(floor.lo, 0u);
  EXPECT_EQ(floor.hi, 0u);
  const MagnitudeTable above = magnitude_table(kMinTableShift + 1);
  EXPECT_NE(above.hi, 0u) << "one shift up, 6 x 2^-12 rounds to the smallest subnormal";
  // The exact top: magnitude 6 at shift 6 is 384 (E4M3 0x7C), 0.5 at shift 6 is 32 (0x60).
  const MagnitudeTable top = magnitude_table(6);
  EXPECT_EQ(top.hi >> 24, 0x7Cu);
  EXPECT_EQ((top.lo >> 8) & 0xffu, 0x60u);
}

// The whole path on the CPU: a random MXFP4 matrix (w13 row order, K not a multiple of 64, scales
// spread over more than the exact range) folded by prepare's fold_matrix, then tiled in the W4A8
// layout; every lane of every tile and chunk turns its words and table indices into FP8 registers
// as the kernel will, and each register byte must be the folded byte of the (row, k) that the e4m3
// wgmma fragment gives it (0 past K).
TEST(W4a8Registers, TiledLanesReproduceTheFoldedMatrix) {
  using namespace mxmoe::tiling;
  const TiledShape shape{64, 160, true};  // 4 tiles, K = 160: two chunks and a half
  std::mt19937 rng(5);
  std::vector<std::uint8_t> packed(static_cast<std::size_t>(shape.rows) * shape.k / 2), scales(static_cast<std::size_t>(shape.rows) * shape.groups());
  for (auto& b : packed) b = static_cast<std::uint8_t>(rng());
  for (auto& b : scales) b = static_cast<std::uint8_t>(100 + rng() % 40);  // spans up to 39: some groups re-quantised
  const mxmoe::w4a8::FoldedMatrix folded = mxmoe::w4a8::fold_matrix(packed.data(), scales.data(), shape.rows, shape.k);
  MagnitudeTable tables[kTableShifts];
  for (int i = 0; i < kTableShifts; ++i) tables[i] = magnitude_table(i + kMinTableShift);
  int checked = 0;
  for (int tile = 0; tile < shape.tiles(); ++tile)
    for (int chunk = 0; chunk < shape.chunks(); ++chunk)
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int w = 0; w < 4; ++w) {
          const int s2 = w / 2, h = w % 2;
          // The lane's table index for (row g + 8h, group s2): scale byte g*4 + s2*2 + h.
          const std::uint8_t index = mxmoe::tiling::w4a8::tiled_table_index(scales.data(), folded.base.data(), shape, tile, chunk, g * 4 + s2 * 2 + h);
          std::uint32_t ra = 0, rb = 0;
          e4m3_registers(mxmoe::tiling::w4a8::tiled_word(packed.data(), shape, tile, chunk, lane, w), tables[index], ra, rb);
          const int crow = canonical_row(shape, tile * kTileRows + g + 8 * h);
          for (int j = 0; j < 4; ++j)
            for (int reg = 0; reg < 2; ++reg) {
              const int k = chunk * kChunkK + 32 * s2 + 16 * reg + 4 * t + j;
              const unsigned got = ((reg == 0 ? ra : rb) >> (8 * j)) & 0xffu;
              const unsigned want = k < shape.k ? folded.e4m3[static_cast<std::size_t>(crow) * shape.k + k] : 0u;
              ASSERT_EQ(got, want) << "tile " << tile << " chunk " << chunk << " lane " << lane << " word " << w << " k " << k;
              ++checked;
            }
        }
      }
  EXPECT_EQ(checked, shape.tiles() * shape.chunks() * 32 * 32) << "every slot of every chunk";
  EXPECT_GT(folded.counts.requantized_groups, 0) << "the test spans re-quantised groups too";
}
