// W4A8 (issue 14): E2M1 weights into FP8 (E4M3) A-operand registers, one group shift at a time, with
// byte permutes. Plain functions (host and device), so the CPU tests check the very bytes the GEMM
// will feed its FP8 MMAs.
//
// The fold (prepare/w4a8_fold.hpp) gives every weight the E4M3 byte e4m3(e2m1(code) x 2^s), s the
// shift of its (row, 32-group), and the epilogue 2^base per row. FP8 has no multiply to apply s, and
// adding s to the exponent field is wrong for the zero code and the 0.5 code (a subnormal in E2M1).
// So each (row, group) takes a table: the eight E4M3 bytes of the magnitudes 0..7 at its shift, made
// by the same fold (formats::e4m3_of_e2m1, hence exact wherever the fold is exact and rounded as the
// fold rounds elsewhere); one prmt looks four magnitudes up at once, and the sign (E4M3's bit 7 is its
// sign, and the fold is symmetric) is OR'ed in.
//
// The prepared word (32 bits, 8 codes of one (row, group)): register A's four codes a0..a3 and
// register B's b0..b3 (A and B: two 4-byte FP8 registers), placed so that
//   magnitudes:  a_j & 7 at bits 4j..4j+2,        b_j & 7 at bits 16+4j..16+4j+2   (prmt selectors)
//   signs:       a_j >> 3 at bit 8j+7,            b_j >> 3 at bit 8j+3              (nibble tops)
// Every nibble's top bit, which a selector must have clear, holds a sign: A's already at its byte's
// bit 7, B's four bits below, one shift away. So A is an AND, a prmt and a LOP3; B a shift, an AND,
// a prmt, a shift and a LOP3: 8 integer operations per 8 weights, and two 32-bit table words per
// (row, group).
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"
#include "formats/mxfp4.hpp"
#include "kernels/dequant.hpp"  // byte_perm (prmt.b32 with its host twin)

namespace mxmoe::kernels::w4a8 {

// Shifts whose tables differ: from kMinTableShift down every magnitude rounds to (signed) zero, and
// kMaxTableShift is the fold's largest (prepare/w4a8_fold.hpp: kMaxShift).
constexpr int kMinTableShift = -13, kMaxTableShift = 6;
constexpr int kTableShifts = kMaxTableShift - kMinTableShift + 1;
MXMOE_HD constexpr int table_index(int shift) {
  return (shift < kMinTableShift ? kMinTableShift : shift > kMaxTableShift ? kMaxTableShift : shift) - kMinTableShift;
}

// The eight E4M3 bytes of the magnitude codes 0..7 at one shift: lo holds codes 0..3 (byte i = code
// i), hi codes 4..7.
struct MagnitudeTable {
  std::uint32_t lo = 0, hi = 0;
};

// The table of `shift`, from the fold's own element rounding (the GEMM takes them as the constants
// kMagnitudeTables below).
MXMOE_HD MagnitudeTable magnitude_table(int shift) {
  const int s = table_index(shift) + kMinTableShift;
  MagnitudeTable t;
  for (int c = 0; c < 4; ++c) {
    t.lo |= static_cast<std::uint32_t>(formats::e4m3_of_e2m1(static_cast<std::uint8_t>(c), s)) << (8 * c);
    t.hi |= static_cast<std::uint32_t>(formats::e4m3_of_e2m1(static_cast<std::uint8_t>(c + 4), s)) << (8 * c);
  }
  return t;
}

// magnitude_table of every shift kMinTableShift..kMaxTableShift as constants ({lo, hi}; one literal
// for the host array and the GEMM's __constant__ copy, gemm/weight_formats.cuh), which the GEMM copies
// into shared memory at a CTA's start (computing them there cost a decode CTA about a microsecond:
// 160 ldexpf and encodes); tests/test_w4a8_regs.cpp checks them against magnitude_table.
#define MXMOE_W4A8_MAGNITUDE_TABLES \
  { \
  {0x00000000u, 0x00000000u}, /* shift -13 */ \
  {0x00000000u, 0x01000000u}, /* shift -12 */ \
  {0x00000000u, 0x02010100u}, /* shift -11 */ \
  {0x01000000u, 0x03020201u}, /* shift -10 */ \
  {0x02010000u, 0x06040302u}, /* shift -9 */ \
  {0x03020100u, 0x0c080604u}, /* shift -8 */ \
  {0x06040200u, 0x14100c08u}, /* shift -7 */ \
  {0x0c080400u, 0x1c181410u}, /* shift -6 */ \
  {0x14100800u, 0x24201c18u}, /* shift -5 */ \
  {0x1c181000u, 0x2c282420u}, /* shift -4 */ \
  {0x24201800u, 0x34302c28u}, /* shift -3 */ \
  {0x2c282000u, 0x3c383430u}, /* shift -2 */ \
  {0x34302800u, 0x44403c38u}, /* shift -1 */ \
  {0x3c383000u, 0x4c484440u}, /* shift 0 */ \
  {0x44403800u, 0x54504c48u}, /* shift 1 */ \
  {0x4c484000u, 0x5c585450u}, /* shift 2 */ \
  {0x54504800u, 0x64605c58u}, /* shift 3 */ \
  {0x5c585000u, 0x6c686460u}, /* shift 4 */ \
  {0x64605800u, 0x74706c68u}, /* shift 5 */ \
  {0x6c686000u, 0x7c787470u}, /* shift 6 */ \
  }
constexpr std::uint32_t kMagnitudeTables[kTableShifts][2] = MXMOE_W4A8_MAGNITUDE_TABLES;


// Registers A and B of a prepared word through its (row, group)'s table.
MXMOE_HD void e4m3_registers(std::uint32_t word, const MagnitudeTable& t, std::uint32_t& a, std::uint32_t& b) {
  a = byte_perm(t.lo, t.hi, word & 0x7777u) | (word & 0x80808080u);
  b = byte_perm(t.lo, t.hi, (word >> 16) & 0x7777u) | ((word << 4) & 0x80808080u);
}

// The prepared word of codes a[0..3] (register A, byte j) and b[0..3] (register B, byte j).
MXMOE_HD std::uint32_t prepared_word(const std::uint8_t (&a)[4], const std::uint8_t (&b)[4]) {
  std::uint32_t w = 0;
  for (int j = 0; j < 4; ++j) {
    w |= static_cast<std::uint32_t>(a[j] & 7u) << (4 * j) | static_cast<std::uint32_t>(b[j] & 7u) << (16 + 4 * j);
    w |= static_cast<std::uint32_t>(a[j] >> 3 & 1u) << (8 * j + 7) | static_cast<std::uint32_t>(b[j] >> 3 & 1u) << (8 * j + 3);
  }
  return w;
}

}  // namespace mxmoe::kernels::w4a8
