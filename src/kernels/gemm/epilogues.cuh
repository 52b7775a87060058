// The two GEMMs of the expert MLP differ only in where their input comes from and what their
// epilogue does; each is a policy the kernel (gemm/kernel.cuh) composes with a configuration and a
// weight format.
//   GateUpActivation (GEMM1, w13): reads the hidden states, the align kernel's block list being its
//     dependency; applies the global factors (NVFP4's scales, Mxfp4Shifted's 2^d) and bias to the
//     (gate, up) pair of a lane's accumulators (rows g and g+8 of the interleaved tile), the
//     activation, and stores the intermediate in the operand type.
//   RouterWeightedPartial (GEMM2, w2): reads the intermediate, GEMM1 being its dependency, so it
//     streams its first weight stages before waiting; y = (acc x global + bias) x router weight,
//     fp32, one row per (token, slot) and K split, for the combine to sum in a fixed order.
#pragma once

#include <cstdint>

#include "core/activation.hpp"
#include "kernels/dequant.hpp"
#include "kernels/moe_gemm.hpp"

namespace mxmoe::kernels::gemm {

// The fp32 factor of an expert's dot products: 1 without kGlobalScale, else 2^kGlobalFold x global
// (exact: a power of two times a float): NVFP4's 2^8 x global scale, Mxfp4Shifted's 2^0 x 2^d.
template <class Format>
__device__ __forceinline__ float global_factor(const float* global, std::int64_t index) {
  if constexpr (Format::kGlobalScale) {
    if constexpr (Format::kGlobalFold == 0) return global[index];
    else return global[index] * static_cast<float>(1 << Format::kGlobalFold);
  } else {
    return 1.0f;
  }
}

template <class Format>
struct GateUpActivation {
  static constexpr bool kWaitAtStart = true;  // the block list comes from the previous kernel
  static constexpr bool kSplitK = false;

  float gate_factor, up_factor;
  __device__ GateUpActivation(const MoeGemmParams& p, int expert)
      : gate_factor(global_factor<Format>(p.global_scale, 2 * static_cast<std::int64_t>(expert))),
        up_factor(global_factor<Format>(p.global_scale, 2 * static_cast<std::int64_t>(expert) + 1)) {}

  // lo, hi: rows g and g+8 of tile `tile`, i.e. gate and up of feature tile*8 + g, for `pair`.
  __device__ void store(const MoeGemmParams& p, int expert, int tile, int g, int pair, float lo, float hi, int /*split*/) const {
    const int inter = p.shape.rows / 2, feature = tile * 8 + g;
    float gate = lo, up = hi;
    if constexpr (Format::kGlobalScale) {
      gate *= gate_factor;
      up *= up_factor;
    }
    if (p.bias) {
      gate += p.bias[static_cast<std::int64_t>(expert) * 2 * inter + feature];
      up += p.bias[static_cast<std::int64_t>(expert) * 2 * inter + inter + feature];
    }
    const float v = activate(p.act_kind, gate, up, p.act_limit, p.act_alpha);
    p.inter_out[static_cast<std::int64_t>(pair) * inter + feature] = Format::Ops::store(v);
  }
};

template <class Format>
struct RouterWeightedPartial {
  static constexpr bool kWaitAtStart = false;  // waits for the intermediate after the weight prologue
  static constexpr bool kSplitK = true;

  float factor;
  __device__ RouterWeightedPartial(const MoeGemmParams& p, int expert)
      : factor(global_factor<Format>(p.global_scale, expert)) {}

  // lo, hi: rows g and g+8 of tile `tile` (hidden features tile*16 + g, + 8) for `pair`.
  __device__ void store(const MoeGemmParams& p, int expert, int tile, int g, int pair, float lo, float hi, int split) const {
    const int hidden = p.shape.rows, row = tile * 16 + g;
    float y0 = lo, y1 = hi;
    if constexpr (Format::kGlobalScale) {
      y0 *= factor;
      y1 *= factor;
    }
    if (p.bias && split == 0) {
      y0 += p.bias[static_cast<std::int64_t>(expert) * hidden + row];
      y1 += p.bias[static_cast<std::int64_t>(expert) * hidden + row + 8];
    }
    const float w = p.pair_weights[pair];
    float* out = p.partial_out + split * p.partial_split_stride + static_cast<std::int64_t>(pair) * hidden;
    out[row] = w * y0;
    out[row + 8] = w * y1;
  }
};

}  // namespace mxmoe::kernels::gemm
