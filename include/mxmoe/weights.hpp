// The canonical MoE weights every loader produces and both the oracle and prepare consume.
#pragma once

#include <cstdint>
#include <string>
#include <optional>

#include "mxmoe/tensor.hpp"

namespace mxmoe {

// What the expert weights are: the quantisation group (with its scale format) and the activations
// they are multiplied with.
//   MXFP4: group 32, one E8M0 byte per group (2^(b-127), every byte 0x00..0xFE), bf16 activations.
//   NVFP4: group 16, one UE4M3 byte per group (E4M3 with the sign bit clear: NVIDIA's block-scale
//          format) and one fp32 global scale per matrix of an expert; bf16 or fp16 activations.
// The activation dtype is that of the hidden states, the intermediate and the output alike.
struct WeightFormat {
  int group_size = 32;
  DType activation_dtype = DType::BF16;

  bool nvfp4() const { return group_size == 16; }
  static WeightFormat mxfp4() { return {32, DType::BF16}; }
  static WeightFormat nvfp4_with(DType activations) { return {16, activations}; }
};

// Checks a format the kernels can run; throws mxmoe::Error saying what is wrong and why. MoeLayer's
// constructor runs it first, before it looks for a GPU.
void validate_layer_formats(const WeightFormat& format);

// E experts, hidden size H, expert intermediate size I, group G = format.group_size (32 or 16).
// Packed E2M1, low nibble = even K index.
//   w13        U8 [E, 2I, H/2]  rows 0..I-1 gate (w1), rows I..2I-1 up (w3)
//   w13_scale  U8 [E, 2I, H/G]  MXFP4: E8M0 (0xFF refused); NVFP4: UE4M3 (NaN 0x7F and sign bit refused)
//   w2         U8 [E, H, I/2]
//   w2_scale   U8 [E, H, I/G]
//   w13_global_scale F32 [E, 2] (NVFP4 only, required): column 0 multiplies the gate rows, column 1
//              the up rows (ModelOpt's weight_scale_2 of gate_proj and up_proj; kept apart, not merged)
//   w2_global_scale  F32 [E]    (NVFP4 only, required): down_proj's weight_scale_2
//   w13_bias   F32 [E, 2I] (optional), w2_bias F32 [E, H] (optional)
//   router_weight F32 [E, H] (optional), correction_bias F32 [E] (optional)
// A weight is e2m1 x scale (MXFP4) or e2m1 x ue4m3 x global (NVFP4); the oracle and the kernels
// apply the global scale to the fp32 dot product of a row (global x sum(e2m1 x ue4m3 x x)).
struct CanonicalMoeWeights {
  int num_experts = 0;
  int hidden = 0;
  int inter = 0;
  HostTensor w13, w13_scale, w2, w2_scale;
  std::optional<HostTensor> w13_global_scale, w2_global_scale;  // NVFP4 only
  std::optional<HostTensor> w13_bias, w2_bias;
  std::optional<HostTensor> router_weight, correction_bias;
  WeightFormat format;

  // Checks every shape and dtype above and every scale byte (no NaN; NVFP4: no sign bit; global
  // scales finite and positive); throws mxmoe::Error naming the tensor, the expected and the found.
  void validate() const;

  std::size_t expert_weight_bytes() const;  // packed weights + scales of one expert
};

// W4A8 (issue 14: MXFP4 weights x FP8 per-token activations). The fold turns each MXFP4 weight row into
// E4M3 bytes and one base exponent (weights = e4m3 x 2^base); a group whose E8M0 exponent lies more
// than 14 below its row's largest cannot be represented exactly and is re-quantised to the nearest
// E4M3 (src/prepare/w4a8_fold.hpp has the rule and the exactness argument). These are the counts.
struct W4a8FoldCounts {
  std::int64_t groups = 0;              // 32-element groups looked at
  std::int64_t requantized_groups = 0;  // groups outside their row's span, re-quantised
  std::int64_t changed_elements = 0;    // elements whose value the re-quantisation changed
};
struct W4a8FoldReport {
  W4a8FoldCounts w13, w2;
};
// What folding every expert of `w` would re-quantise, per tensor. MXFP4 only (throws mxmoe::Error
// Unsupported for NVFP4). Reads every scale byte and, only in re-quantised groups, the codes.
W4a8FoldReport w4a8_fold_report(const CanonicalMoeWeights& w);
// "N of M groups re-quantised (x%), K element(s) changed": one wording for inspect, bench and the layer.
std::string describe_fold(const W4a8FoldCounts& counts);

// Synthetic weights from a fixed seed: values drawn like a trained layer's (normal, std
// `weight_std`), quantized by the OCP rule; biases and router included when asked.
struct SyntheticSpec {
  int num_experts = 8, hidden = 256, inter = 128;
  float weight_std = 0.02f;
  bool with_biases = false;
  bool with_router = true;
  std::uint64_t seed = 1;
  WeightFormat format;  // NVFP4 gets UE4M3 scales near the asked std and global scales near 1
};
CanonicalMoeWeights make_synthetic_weights(const SyntheticSpec& spec);

}  // namespace mxmoe
