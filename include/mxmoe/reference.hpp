// The CPU oracle: plain loops in fp32 that every GPU result is checked against.
#pragma once

#include <cstdint>
#include <vector>

#include "mxmoe/config.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe {

// Routing result: for each token t and slot s < top_k, ids[t*top_k+s] is an expert id (or -1:
// "not on this rank", skipped) and weights[t*top_k+s] its weight.
struct TopK {
  int num_tokens = 0;
  int top_k = 0;
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
};

namespace reference {

// Router logits [T, E] = hidden [T, H] x router_weight^T, in fp32; hidden holds bf16 bits, or fp16
// bits when w.format.activation_dtype is F16 (NVFP4 layers).
// logit_bias [E] (may be null) is added to every token's logits: gpt-oss's router.bias, which, unlike
// a correction bias, changes the routing weights too (checkpoint.hpp: LoadedMoeLayer::router_logit_bias).
std::vector<float> router_logits(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                 const float* logit_bias = nullptr);

// Top-k routing of `logits` [T, E] by `config`; correction_bias [E] (may be null) only
// affects the choice of experts, never the weights (DeepSeek V3/V4).
// Slot s holds the s-th best expert; at equal selection scores the lower expert id (and group id)
// wins. Softmax modes select on the logits and ignore correction_bias and groups. Logits and
// bias must be finite.
TopK route(const float* logits, int num_tokens, int num_experts, const RoutingConfig& config,
           const float* correction_bias);

// The routed-experts forward: out[t] = sum_s weights[t,s] * expert_{ids[t,s]}(hidden[t]).
// hidden and the result are [T, H] 16-bit patterns of the activation dtype, w.format.activation_dtype:
// bf16 (MXFP4, and NVFP4 by default) or fp16 (NVFP4 only). Semantics the GPU path follows too:
//   h1 = W13 x (fp32 accumulate of exactly dequantised weights and the inputs) (+ w13_bias)
//        NVFP4: each row's fp32 dot product times its matrix's global scale, then the bias:
//        gate rows w13_global_scale[e, 0], up rows w13_global_scale[e, 1]; a weight is e2m1 x ue4m3
//   a  = activation(gate, up), rounded to the activation dtype (the intermediate is stored in it)
//   y  = W2 a (+ w2_bias) (NVFP4: global x (W2 a) + w2_bias, global = w2_global_scale[e]), times the
//        slot's weight, summed over slots in fp32, rounded to the activation dtype.
// Experts with id -1 are skipped; ids outside -1..E-1 are an error. threads = 0: all cores.
std::vector<std::uint16_t> moe_forward(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                       const TopK& topk, const ActivationConfig& act, int threads = 0);

// The same forward with the activations in `precision`. Bf16 is the function above (bit for bit).
// Fp8PerToken (W4A8, issue 14; MXFP4 weights with bf16 activations only, NVFP4 throws Unsupported):
//   x_t   = each token's hidden row quantised to E4M3: s_t = amax / 448 (formats/e4m3.hpp,
//           fp8_row_scale: 1 when amax is 0), q = e4m3(x x (1 / s_t)), round to nearest even, saturating
//   W     = each weight row folded to E4M3 bytes and a base exponent, e4m3 x 2^base (src/prepare/
//           w4a8_fold.hpp: exact when the row's E8M0 exponents span at most 15 values; groups further
//           below are re-quantised to the nearest E4M3). Folded inside the call from w, nothing cached.
//   h1    = ldexp(fp32 dot(W13 row, x_t) x s_t, base) (+ w13_bias)
//   a     = activation(gate, up) rounded to bf16, then that (token, slot) row quantised like x_t (s_a)
//   y     = ldexp(fp32 dot(W2 row, a) x s_a, base) (+ w2_bias); slot weights and the bf16 output as above.
// Results do not depend on the thread count or on how tokens are batched.
std::vector<std::uint16_t> moe_forward(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                       const TopK& topk, const ActivationConfig& act, ActivationPrecision precision,
                                       int threads = 0);

// An independent float64 recomputation of moe_forward for the listed tokens (each in 0..T-1):
// weights decoded to double (NVFP4: the global scale on each row's dot product, as above), inputs
// read in the activation dtype, double accumulation, activation in double, no rounding anywhere
// (not even of the intermediate). Result [token_indices.size(), H] in the listed order. Used to
// check the fp32 path; same input checks as moe_forward.
std::vector<double> moe_forward_f64(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                    const TopK& topk, const ActivationConfig& act, const std::vector<int>& token_indices,
                                    int threads = 0);

// Unquantized expert weights in canonical order, F32: w13 [E, 2I, H] (gate rows, then up rows) and
// w2 [E, H, I] (quantize_moe_layer in mxmoe/checkpoint.hpp gives them for a bf16/f16/f32 layer).
struct DenseExpertWeights {
  HostTensor w13, w2;
};

// moe_forward_f64 with the experts' weights taken from `dense` instead of w's MXFP4/NVFP4 tensors (w
// still gives E, H, I, the biases and the activation dtype; no global scale applies to dense rows): the unquantized layer, to measure the quantisation error of w.
std::vector<double> moe_forward_f64(const CanonicalMoeWeights& w, const DenseExpertWeights& dense, const std::uint16_t* hidden,
                                    int num_tokens, const TopK& topk, const ActivationConfig& act,
                                    const std::vector<int>& token_indices, int threads = 0);

}  // namespace reference
}  // namespace mxmoe
