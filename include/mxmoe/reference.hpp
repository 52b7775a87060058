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

// Router logits [T, E] = hidden [T, H] (bf16 bits) x router_weight^T, in fp32.
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
// hidden and the result are [T, H] bf16 bits. Semantics the GPU path follows too:
//   h1 = W13 x (fp32 accumulate of exactly dequantised weights and bf16 inputs) (+ w13_bias)
//   a  = activation(gate, up), rounded to bf16 (the intermediate is stored in bf16)
//   y  = W2 a (+ w2_bias), times the slot's weight, summed over slots in fp32, rounded to bf16.
// Experts with id -1 are skipped; ids outside -1..E-1 are an error. threads = 0: all cores.
std::vector<std::uint16_t> moe_forward(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                       const TopK& topk, const ActivationConfig& act, int threads = 0);

// An independent float64 recomputation of moe_forward for the listed tokens (each in 0..T-1):
// weights decoded to double, double accumulation, activation in double, no rounding anywhere
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

// moe_forward_f64 with the experts' weights taken from `dense` instead of w's MXFP4 tensors (w still
// gives E, H, I and the biases): the unquantized layer, to measure the quantisation error of w.
std::vector<double> moe_forward_f64(const CanonicalMoeWeights& w, const DenseExpertWeights& dense, const std::uint16_t* hidden,
                                    int num_tokens, const TopK& topk, const ActivationConfig& act,
                                    const std::vector<int>& token_indices, int threads = 0);

}  // namespace reference
}  // namespace mxmoe
