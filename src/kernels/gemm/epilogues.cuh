// The two GEMMs of the expert MLP differ only in where their input comes from and what their
// epilogue does; each is a policy the kernel (gemm/kernel.cuh) composes with a configuration and a
// weight format.
//   GateUpActivation (GEMM1, w13): reads the hidden states, the align kernel's block list being its
//     dependency; applies the format's factors (epilogue_factor) and bias to the
//     (gate, up) pair of a lane's accumulators (rows g and g+8 of the interleaved tile), the
//     activation, and stores the intermediate in the operand type.
//   GateUpPartial (GEMM1 with its K split): the same factors and biases, the sums written fp32 per
//     split; kernels/gate_up_reduce adds the splits and applies the activation.
//   RouterWeightedPartial (GEMM2, w2): reads the intermediate, GEMM1 being its dependency, so it
//     streams its first weight stages before waiting; y = (acc x factor + bias) x router weight,
//     fp32, one row per (token, slot) and K split, for the combine to sum in a fixed order.
// The factor of a row's fp32 dot products, one rule per weight format (weight_formats.cuh):
//   kGlobalScale (NVFP4)        2^kGlobalFold x global_scale[e, 0 | 1] (w13 gate | up rows), [e] (w2)
//   kRowFactor (Mxfp4Shifted)   row_factor[e, r], r the canonical row: w13 gate row f is r = f, up
//                               row f is r = I + f; w2 row r (hidden feature r); the row's 2^d
//   neither (Mxfp4, Mxfp4Wide)  none: the accumulators are used as they are
#pragma once

#include <cstdint>

#include "core/activation.hpp"
#include "kernels/dequant.hpp"
#include "kernels/moe_gemm.hpp"

namespace mxmoe::kernels::gemm {

template <class Format>
inline constexpr bool kHasFactor = Format::kGlobalScale || Format::kRowFactor;

// The fp32 factor of one weight row of expert e (the rule above): global_index is the row's
// (expert, matrix half) index into global_scale, row_index its e x rows + r into row_factor. Exact:
// a power of two times a float (NVFP4's 2^8 x global scale), or a power of two (2^d).
template <class Format>
__device__ __forceinline__ float epilogue_factor(const MoeGemmParams& p, std::int64_t global_index, std::int64_t row_index) {
  static_assert(!(Format::kGlobalScale && Format::kRowFactor), "one factor rule per format");
  if constexpr (Format::kGlobalScale) {
    if constexpr (Format::kGlobalFold == 0) return p.global_scale[global_index];
    else return p.global_scale[global_index] * static_cast<float>(1 << Format::kGlobalFold);
  } else if constexpr (Format::kRowFactor) {
    return p.row_factor[row_index];
  } else {
    return 1.0f;
  }
}

// A stage is constructed once per (expert, weight tile, lane row g, K split), after the main loop:
// it loads what is per row (factors, biases) into registers then, so that the per-pair
// stores issue no dependent global loads. `pair_weight` is what the kernel stages in shared memory
// per pair slot at its start (GEMM2's router weight; 1 for GEMM1, loading nothing).

template <class Format>
struct GateUpActivation {
  static constexpr bool kWaitAtStart = true;  // the block list comes from the previous kernel
  static constexpr bool kSplitK = false;
  __device__ static float pair_weight(const MoeGemmParams&, int) { return 1.0f; }

  float gate_factor, up_factor, gate_bias = 0.0f, up_bias = 0.0f;
  int feature;
  // Rows g and g+8 of tile `tile`: gate and up of feature tile*8 + g (canonical rows feature and
  // inter + feature).
  __device__ GateUpActivation(const MoeGemmParams& p, int expert, int tile, int g, int /*split*/)
      : gate_factor(epilogue_factor<Format>(p, 2 * static_cast<std::int64_t>(expert),
                                            static_cast<std::int64_t>(expert) * p.shape.rows + tile * 8 + g)),
        up_factor(epilogue_factor<Format>(p, 2 * static_cast<std::int64_t>(expert) + 1,
                                          static_cast<std::int64_t>(expert) * p.shape.rows + p.shape.rows / 2 + tile * 8 + g)),
        feature(tile * 8 + g) {
    const int inter = p.shape.rows / 2;
    if (p.bias) {
      gate_bias = p.bias[static_cast<std::int64_t>(expert) * 2 * inter + feature];
      up_bias = p.bias[static_cast<std::int64_t>(expert) * 2 * inter + inter + feature];
    }
  }

  // lo, hi: the gate and up accumulators of a pair; gate, up: with the factors and biases.
  __device__ void gate_up(float lo, float hi, float& gate, float& up) const {
    gate = lo;
    up = hi;
    if constexpr (kHasFactor<Format>) {
      gate *= gate_factor;
      up *= up_factor;
    }
    gate += gate_bias;
    up += up_bias;
  }

  // lo, hi: the gate and up accumulators of `pair`.
  __device__ void store(const MoeGemmParams& p, int pair, float /*pair_weight*/, float lo, float hi) const {
    const int inter = p.shape.rows / 2;
    float gate, up;
    gate_up(lo, hi, gate, up);
    const float v = activate(p.act_kind, gate, up, p.act_limit, p.act_alpha);
    p.inter_out[static_cast<std::int64_t>(pair) * inter + feature] = Format::Ops::store(v);
  }
};

// GEMM1 with its K split (gemm1_k_splits: tiny batches whose GEMM1 has few CTAs): each split writes
// its (gate, up) sums, GateUpActivation's factors applied and the biases on split 0 only, as fp32 to
// partial_out[split][pair][2I] (gate at feature f, up at I + f); kernels/gate_up_reduce adds the
// splits in split order and applies the activation.
template <class Format>
struct GateUpPartial {
  static constexpr bool kWaitAtStart = true;
  static constexpr bool kSplitK = true;
  __device__ static float pair_weight(const MoeGemmParams&, int) { return 1.0f; }

  GateUpActivation<Format> rows;
  float* out;  // this split's outputs, pair 0
  __device__ GateUpPartial(const MoeGemmParams& p, int expert, int tile, int g, int split)
      : rows(p, expert, tile, g, split), out(p.partial_out + split * p.partial_split_stride) {
    if (split != 0) rows.gate_bias = rows.up_bias = 0.0f;
  }

  __device__ void store(const MoeGemmParams& p, int pair, float /*pair_weight*/, float lo, float hi) const {
    float gate, up;
    rows.gate_up(lo, hi, gate, up);
    float* o = out + static_cast<std::int64_t>(pair) * p.shape.rows;
    o[rows.feature] = gate;
    o[p.shape.rows / 2 + rows.feature] = up;
  }
};

template <class Format>
struct RouterWeightedPartial {
  static constexpr bool kWaitAtStart = false;  // waits for the intermediate after the weight prologue
  static constexpr bool kSplitK = true;
  __device__ static float pair_weight(const MoeGemmParams& p, int pair) { return p.pair_weights[pair]; }

  float factor_lo, factor_hi, bias_lo = 0.0f, bias_hi = 0.0f;
  int row;
  float* out;  // this split's outputs, row 0 of pair 0
  // Rows g and g+8 of tile `tile`: hidden features tile*16 + g and + 8; the bias goes to split 0 only.
  __device__ RouterWeightedPartial(const MoeGemmParams& p, int expert, int tile, int g, int split)
      : factor_lo(epilogue_factor<Format>(p, expert, static_cast<std::int64_t>(expert) * p.shape.rows + tile * 16 + g)),
        factor_hi(epilogue_factor<Format>(p, expert, static_cast<std::int64_t>(expert) * p.shape.rows + tile * 16 + g + 8)),
        row(tile * 16 + g), out(p.partial_out + split * p.partial_split_stride) {
    if (p.bias && split == 0) {
      bias_lo = p.bias[static_cast<std::int64_t>(expert) * p.shape.rows + row];
      bias_hi = p.bias[static_cast<std::int64_t>(expert) * p.shape.rows + row + 8];
    }
  }

  // lo, hi: rows g and g+8 for `pair`, whose router weight is `w`.
  __device__ void store(const MoeGemmParams& p, int pair, float w, float lo, float hi) const {
    float y0 = lo, y1 = hi;
    if constexpr (kHasFactor<Format>) {
      y0 *= factor_lo;
      y1 *= factor_hi;
    }
    y0 += bias_lo;
    y1 += bias_hi;
    float* o = out + static_cast<std::int64_t>(pair) * p.shape.rows;
    o[row] = w * y0;
    o[row + 8] = w * y1;
  }
};

// Both kernels' last step per pair: its rows g and g+8 (lo, hi) through the stage, W4A8's activation
// row scale first (formats with kActScale: (acc x act_scale) x factor, the oracle's order; other
// formats ignore act_scale).
template <class Format, class Stage>
__device__ __forceinline__ void store_pair(const MoeGemmParams& p, const Stage& epilogue, int pair, float act_scale, float pair_weight,
                                           float lo, float hi) {
  if constexpr (Format::kActScale) {
    lo *= act_scale;
    hi *= act_scale;
  }
  epilogue.store(p, pair, pair_weight, lo, hi);
}
// The activation row scale of a pair read from global memory (the mma.sync kernel; the wgmma kernel
// stages them in shared memory), 1 for formats without one.
template <class Format>
__device__ __forceinline__ float act_scale_of(const MoeGemmParams& p, int act_row) {
  if constexpr (Format::kActScale) return p.act_scale[act_row];
  else return 1.0f;
}

}  // namespace mxmoe::kernels::gemm
