// MXFP4 layers with E8M0 bytes above 128 run Mxfp4's one multiply per register after a per-ROW
// exponent shift (kernels::GemmFormat::Mxfp4Shifted). For each weight row of each expert (w13: 2I
// rows in canonical order, gate rows 0..I-1 then up rows I..2I-1; w2: H rows) whose largest byte is
// m and smallest lo, the shift is d = max(0, m - 128); the prepared scale bytes are b - d (0..128 when
// m - lo <= 128) and the epilogue multiplies the row's fp32 dot products by 2^d (exact: d <= 126):
// (v x 2^(b-d-127)) x 2^d is v x 2^(b-127), the canonical value. The CPU oracle is unchanged; only
// the prepared form is.
// Why per row and not per (expert, matrix half): the tensor core accumulates in fp32, so a row's
// products (shifted weight x intermediate) must stay normal. A shift chosen for the half's largest
// byte can push another row of the half ~d binades down: with tiny intermediates its products
// underflow to 0 where the canonical ones are normal (tests/test_scale_shift.cpp reproduces it). A
// row's own shift only ever lowers its own bytes down to 128 at the top, never further than needed.
// Memory: the factors are E x (2I + H) fp32 (4 bytes per weight row), only for shifted layers.
// Plain C++: MoeLayer, the tests and (through the same rule in python/mxmoe/_prepare.py) the torch
// package share it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/moe_gemm.hpp"

namespace mxmoe::prepare {

struct E8m0Shifts {
  int num_experts = 0, hidden = 0, inter = 0;
  kernels::E8m0ScaleSummary summary;  // what kernels::choose_gemm_format reads
  // d per row, canonical row order: w13 [E, 2I] (gate rows, then up rows), w2 [E, H];
  // max(0, the row's largest byte - 128) whether or not the layer can be shifted (apply them only
  // when choose_gemm_format picks Mxfp4Shifted).
  std::vector<std::uint8_t> w13, w2;

  // 2^d as fp32, [E, 2I] and [E, H]: MoeGemmParams::row_factor of Mxfp4Shifted.
  std::vector<float> w13_factors() const;
  std::vector<float> w2_factors() const;
};

// One pass over a layer's canonical E8M0 scales, w13_scale [E, 2I, H/32] (gate rows, then up rows)
// and w2_scale [E, H, I/32].
E8m0Shifts e8m0_shifts(const std::uint8_t* w13_scale, const std::uint8_t* w2_scale, int num_experts, int hidden, int inter);

// Canonical scales [E, rows, groups] lowered by their row's shift: `shifts` holds one byte per row,
// [E, rows]. InvalidArgument when a byte lies below its row's shift (a row that spans more than 128
// bytes cannot be shifted: Mxfp4Wide's case).
std::vector<std::uint8_t> shift_scales(const std::uint8_t* scales, int num_experts, int rows, int groups,
                                       const std::uint8_t* shifts);

// 2^d as an fp32 bit pattern built from its exponent field, d in 0..127.
float shift_factor(int d);

}  // namespace mxmoe::prepare
