// MXFP4 layers with E8M0 bytes above 128 run Mxfp4's one multiply per register after a per-(expert,
// matrix half) exponent shift (kernels::GemmFormat::Mxfp4Shifted). A matrix half is one expert's w13
// gate rows, its w13 up rows, or its w2. For a half whose largest byte is m and smallest lo, the
// shift is d = max(0, m - 128); the prepared scale bytes are b - d (0..128 when m - lo <= 128) and the
// epilogue multiplies the half's fp32 dot products by 2^d (exact: d <= 126): (v x 2^(b-d-127)) x 2^d
// is v x 2^(b-127), the canonical value. The CPU oracle is unchanged; only the prepared form is.
// Plain C++: MoeLayer, the tests and (through the same rule in python/mxmoe/_prepare.py) the torch
// package share it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/moe_gemm.hpp"

namespace mxmoe::prepare {

struct E8m0Shifts {
  int num_experts = 0;
  kernels::E8m0ScaleSummary summary;  // what kernels::choose_gemm_format reads
  // d per half: w13 [E, 2] (gate, up), w2 [E]; max(0, largest byte - 128) whether or not the layer
  // can be shifted (apply them only when choose_gemm_format picks Mxfp4Shifted).
  std::vector<std::uint8_t> w13, w2;

  // 2^d as fp32, [E, 2] and [E]: MoeGemmParams::global_scale of Mxfp4Shifted.
  std::vector<float> w13_factors() const;
  std::vector<float> w2_factors() const;
};

// One pass over a layer's canonical E8M0 scales, w13_scale [E, 2I, H/32] (gate rows, then up rows)
// and w2_scale [E, H, I/32].
E8m0Shifts e8m0_shifts(const std::uint8_t* w13_scale, const std::uint8_t* w2_scale, int num_experts, int hidden, int inter);

// Canonical scales [E, rows, groups] lowered by their half's shift: `shifts` holds `halves` bytes per
// expert (2 for w13: rows [0, rows/2) and [rows/2, rows); 1 for w2). InvalidArgument when a byte lies
// below its shift (a half that spans more than 128 bytes cannot be shifted).
std::vector<std::uint8_t> shift_scales(const std::uint8_t* scales, int num_experts, int rows, int groups,
                                       const std::uint8_t* shifts, int halves);

// 2^d as an fp32 bit pattern built from its exponent field, d in 0..127.
float shift_factor(int d);

}  // namespace mxmoe::prepare
