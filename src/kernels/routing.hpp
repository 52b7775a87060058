// Top-k routing from router logits on the GPU, the same rules as the CPU oracle
// (include/mxmoe/reference.hpp): ties go to the lower expert (and group) id.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mxmoe/config.hpp"

namespace mxmoe::kernels {

constexpr int kMaxRoutingTopK = 16;
constexpr int kMaxRoutingGroups = 64;

// logits [T, E] fp32 -> topk_ids [T, k], topk_weights [T, k]; correction_bias [E] may be null.
void launch_routing(const float* logits, const float* correction_bias, int num_tokens, int num_experts,
                    const RoutingConfig& config, std::int32_t* topk_ids, float* topk_weights, cudaStream_t stream);

}  // namespace mxmoe::kernels
