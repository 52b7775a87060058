// The weight formats of the GEMM, as policies: each turns one lane's 16 tile-layout bytes of a
// 64-K chunk (kernels/tile_layout.hpp) and the chunk's scales in shared memory into the lane's
// sixteen A-fragment registers (four k16 steps x four registers), exactly. The epilogue then
// multiplies the fp32 dot products by at most one factor (epilogues.cuh: epilogue_factor):
//   kGlobalScale  per (expert, matrix half): 2^kGlobalFold x MoeGemmParams::global_scale (NVFP4)
//   kRowFactor    per (expert, weight row): MoeGemmParams::row_factor (Mxfp4Shifted's 2^d)
//   Mxfp4         E8M0 bytes 0..128: one multiply per register (the fast path of real checkpoints)
//   Mxfp4Shifted  Mxfp4's dequant over bytes lowered at prepare time by a per-ROW shift
//                 d = max(0, the row's largest byte - 128) (prepare/scale_shift.hpp); the factor 2^d
//                 comes back in the epilogue: (v x 2^(b-d-127)) x 2^d, exact. Per row, not per
//                 matrix half: a half's shift would push its rows with smaller bytes ~d binades down,
//                 where their fp32 products with tiny activations underflow to 0 (the row's own shift
//                 leaves its largest byte at 128, so its products are as normal as Mxfp4's). Any
//                 layer whose rows each span at most 128 bytes, i.e. every layer but pathological ones
//   Mxfp4Wide     every E8M0 byte 0..254 with no prepared shift: a warp whose chunk holds a byte
//                 above 128 takes two multiplies (dequant.hpp: e8m0_wide_scale_pair_bits), every
//                 other chunk Mxfp4's one; only for a row spanning more than 128 bytes (2^128 within
//                 one row)
//   Nvfp4<Ops>    UE4M3 per 16 (prepared as codes, tile_layout.hpp) and a global scale, bf16 or fp16
//                 operands; the weights carry v x s x 2^-8 and the epilogue multiplies by 2^8 x global
//   Mxfp4E4m3     W4A8 (issue 14): the W4A8 tile layout
//                 (tile_layout_w4a8.hpp), its 16 lane bytes becoming two k32 steps of e4m3 registers
//                 through per-(row, group) magnitude tables in shared memory (w4a8_regs.hpp); the
//                 epilogue multiplies by the pair's activation scale (kActScale) and the row's 2^base
//                 (kRowFactor)
// Register r of step s holds (row g + 8*(r&1), k 16s + 2t + 8*(r>>1) + {0, 1}) for the 16-bit
// formats; Mxfp4E4m3's (row g + 8*(r&1), k 32s + 16*(r>>1) + 4t + {0..3}).
// Every format also says whether its epilogue takes a per-pair activation scale (kActScale) and what
// the CTA sets up in shared memory before its first stage (init_shared, before the kernel's first
// CTA barrier).
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/dequant.hpp"
#include "kernels/gemm/operands.cuh"
#include "kernels/tile_layout.hpp"
#include "kernels/w4a8_regs.hpp"

namespace mxmoe::kernels::gemm {

// The W4A16 formats: bf16/fp16 activations as stored, both kernels, nothing in shared memory.
struct W4a16Format {
  static constexpr bool kActScale = false;
  __device__ static void init_shared(int /*tid*/) {}
};

// The four registers of one step from the step's word, with row scales lo (row g) and hi (row g+8),
// `Mul` applying a scale pair to a register (one or two multiplies).
template <class Ops, class Mul>
__device__ __forceinline__ void dequant_step(std::uint32_t word, std::uint32_t (&a)[4], const Mul& mul) {
  a[0] = mul(Ops::template nibbles<0>(word), 0);
  a[1] = mul(Ops::template nibbles<1>(word), 1);
  a[2] = mul(Ops::template nibbles<2>(word), 0);
  a[3] = mul(Ops::template nibbles<3>(word), 1);
}

struct Mxfp4 : W4a16Format {
  using Ops = Bf16Operands;
  static constexpr int kGroup = 32;
  static constexpr bool kGlobalScale = false;
  static constexpr int kGlobalFold = 0;
  static constexpr bool kRowFactor = false;

  __device__ static void dequant(const uint4& wv, const std::uint8_t* chunk_scales, int lane, std::uint32_t (&a)[4][4]) {
    // Scale bytes: (row g, group 0), (row g+8, group 0), (row g, group 1), (row g+8, group 1).
    dequant_with(wv, *reinterpret_cast<const std::uint32_t*>(chunk_scales + (lane / 4) * 4), a);
  }
  __device__ static void dequant_with(const uint4& wv, std::uint32_t sc, std::uint32_t (&a)[4][4]) {
    const std::uint32_t s[4] = {e8m0_scale_pair_bits_of_byte<0>(sc), e8m0_scale_pair_bits_of_byte<1>(sc),
                                e8m0_scale_pair_bits_of_byte<2>(sc), e8m0_scale_pair_bits_of_byte<3>(sc)};
    const std::uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int step = 0; step < 4; ++step)
      dequant_step<Ops>(words[step], a[step], [&](std::uint32_t v, int half) { return Ops::mul(v, s[(step / 2) * 2 + half]); });
  }
};

// Mxfp4's registers; the epilogue multiplies by the row's 2^d (row_factor, exact in fp32: d <= 126).
struct Mxfp4Shifted : Mxfp4 {
  static constexpr bool kRowFactor = true;
};

struct Mxfp4Wide : W4a16Format {
  using Ops = Bf16Operands;
  static constexpr int kGroup = 32;
  static constexpr bool kGlobalScale = false;
  static constexpr int kGlobalFold = 0;
  static constexpr bool kRowFactor = false;

  __device__ static void dequant(const uint4& wv, const std::uint8_t* chunk_scales, int lane, std::uint32_t (&a)[4][4]) {
    const std::uint32_t sc = *reinterpret_cast<const std::uint32_t*>(chunk_scales + (lane / 4) * 4);
    // Warp-uniform (every lane of the warp dequantises the same tile and chunk): only a chunk that
    // holds a byte above 128 pays the second multiply. Still 1.08-1.14x Mxfp4's time at decode with a
    // single such block (the branch costs what the multiply saved; measured on an H200,
    // bench/results/20261130-1239-NVIDIA-H200), which is why real layers run Mxfp4Shifted.
    if (!__any_sync(0xffffffffu, any_scale_byte_above_128(sc))) return Mxfp4::dequant_with(wv, sc, a);
    ScalePairBits s[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) s[i] = e8m0_wide_scale_pair_bits((sc >> (8 * i)) & 0xffu);
    const std::uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int step = 0; step < 4; ++step)
      dequant_step<Ops>(words[step], a[step], [&](std::uint32_t v, int half) {
        const ScalePairBits& f = s[(step / 2) * 2 + half];
        return Ops::mul(Ops::mul(v, f.first), f.second);
      });
  }
};

template <class Operands>
struct Nvfp4 : W4a16Format {
  using Ops = Operands;
  static constexpr int kGroup = 16;
  static constexpr bool kGlobalScale = true;
  static constexpr int kGlobalFold = kNvfp4Fold;  // the weights carry v x s x 2^-8
  static constexpr bool kRowFactor = false;

  // Prepared scale code -> s x 2^6 (fp16) or s x 2^118 (bf16) in both halves (dequant.hpp).
  __device__ static std::uint32_t lifted_scale(std::uint32_t code) {
    if constexpr (std::is_same_v<Ops, F16Operands>) return nvfp4_code_f16_pair_bits(code);
    else return nvfp4_code_bf16_pair_bits(code);
  }

  __device__ static void dequant(const uint4& wv, const std::uint8_t* chunk_scales, int lane, std::uint32_t (&a)[4][4]) {
    // Bytes step*2 + half: (row g, step 0), (row g+8, step 0), (row g, step 1), ...
    const uint2 sc = *reinterpret_cast<const uint2*>(chunk_scales + (lane / 4) * 8);
    const std::uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int step = 0; step < 4; ++step) {
      const std::uint32_t w = step < 2 ? sc.x : sc.y, shift = 16 * (step % 2);
      const std::uint32_t s_lo = lifted_scale((w >> shift) & 0xffu), s_hi = lifted_scale((w >> (shift + 8)) & 0xffu);
      dequant_step<Ops>(words[step], a[step], [&](std::uint32_t v, int half) { return Ops::mul(v, half ? s_hi : s_lo); });
    }
  }
};

// W4A8's magnitude tables: entry i = kernels::w4a8::magnitude_table(i + kMinTableShift) as {lo, hi}
// (160 bytes), one copy per CTA.
static __constant__ std::uint32_t w4a8_constant_tables[w4a8::kTableShifts][2] = MXMOE_W4A8_MAGNITUDE_TABLES;
__device__ __forceinline__ uint2* w4a8_tables() {
  __shared__ uint2 tables[w4a8::kTableShifts];
  return tables;
}

struct Mxfp4E4m3 {
  using Ops = E4m3Operands;
  static constexpr int kGroup = 32;
  static constexpr bool kGlobalScale = false;
  static constexpr int kGlobalFold = 0;
  static constexpr bool kRowFactor = true;  // 2^base of the row (prepare/w4a8_fold.hpp's rule)
  static constexpr bool kActScale = true;

  __device__ static void init_shared(int tid) {
    if (tid < w4a8::kTableShifts) w4a8_tables()[tid] = make_uint2(w4a8_constant_tables[tid][0], w4a8_constant_tables[tid][1]);
  }
  // Word w = 2 s2 + h of the lane (tile_layout_w4a8.hpp) is row g + 8h, k32 step s2 (the chunk's
  // group s2): its A register is a[s2][h] (k 4t..), its B register a[s2][2 + h] (k 16 + 4t..). The
  // chunk's scale word holds the table index of (row g + 8h, group s2) in byte 2 s2 + h = w.
  __device__ static void dequant(const uint4& wv, const std::uint8_t* chunk_scales, int lane, std::uint32_t (&a)[4][4]) {
    const std::uint32_t sc = *reinterpret_cast<const std::uint32_t*>(chunk_scales + (lane / 4) * 4);
    const uint2* tables = w4a8_tables();
    const std::uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint2 t = tables[(sc >> (8 * w)) & 0xffu];
      w4a8::e4m3_registers(words[w], w4a8::MagnitudeTable{t.x, t.y}, a[w / 2][w % 2], a[w / 2][2 + w % 2]);
    }
  }
};

}  // namespace mxmoe::kernels::gemm
