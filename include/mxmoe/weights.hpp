// The canonical MoE weights every loader produces and both the oracle and prepare consume.
#pragma once

#include <cstdint>
#include <optional>

#include "mxmoe/tensor.hpp"

namespace mxmoe {

// What the expert weights are: the quantisation group (with its scale format) and the activations
// they are multiplied with. MXFP4 (group 32, E8M0 scales) with bf16 activations is what the oracle
// and the Hopper kernels run; group 16 is NVFP4 (E4M3 scales), refused as not supported yet.
struct WeightFormat {
  int group_size = 32;
  DType activation_dtype = DType::BF16;
};

// Checks a format the kernels can run; throws mxmoe::Error saying what is wrong and why. MoeLayer's
// constructor runs it first, before it looks for a GPU.
void validate_layer_formats(const WeightFormat& format);

// E experts, hidden size H, expert intermediate size I. Packed E2M1, low nibble = even K index.
//   w13        U8 [E, 2I, H/2]  rows 0..I-1 gate (w1), rows I..2I-1 up (w3)
//   w13_scale  U8 [E, 2I, H/32] E8M0 (0xFF refused)
//   w2         U8 [E, H, I/2]
//   w2_scale   U8 [E, H, I/32]
//   w13_bias   F32 [E, 2I] (optional), w2_bias F32 [E, H] (optional)
//   router_weight F32 [E, H] (optional), correction_bias F32 [E] (optional)
struct CanonicalMoeWeights {
  int num_experts = 0;
  int hidden = 0;
  int inter = 0;
  HostTensor w13, w13_scale, w2, w2_scale;
  std::optional<HostTensor> w13_bias, w2_bias;
  std::optional<HostTensor> router_weight, correction_bias;
  WeightFormat format;  // every loader produces MXFP4 (group 32) for bf16 activations

  // Checks every shape and dtype above and that no scale byte is 0xFF (NaN);
  // throws mxmoe::Error naming the tensor, the expected and the found.
  void validate() const;

  std::size_t expert_weight_bytes() const;  // packed weights + scales of one expert
};

// Synthetic weights from a fixed seed: values drawn like a trained layer's (normal, std
// `weight_std`), quantized by the OCP rule; biases and router included when asked.
struct SyntheticSpec {
  int num_experts = 8, hidden = 256, inter = 128;
  float weight_std = 0.02f;
  bool with_biases = false;
  bool with_router = true;
  std::uint64_t seed = 1;
};
CanonicalMoeWeights make_synthetic_weights(const SyntheticSpec& spec);

}  // namespace mxmoe
