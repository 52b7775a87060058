// GEMM1 with its K split (kernels::gemm1_k_splits): the splits' (gate, up) sums added in split order,
// then the activation, stored as GEMM1's epilogue stores the intermediate.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mxmoe/config.hpp"

namespace mxmoe::kernels {

// inter_out[pair, f] = bf16 or fp16 (f16_out) of activate(gate, up), gate = sum over the splits z in
// order of partial[z * split_stride + pair * 2I + f], up the same at I + f, for every pair whose id
// topk_ids[pair] is in 0..E-1; the other pairs (masked, or outside this rank's experts), which
// GEMM1 never wrote, are neither read nor written.
void launch_gate_up_reduce(const float* partial, int splits, std::int64_t split_stride, const std::int32_t* topk_ids, int pairs,
                           int inter, int num_experts, const ActivationConfig& act, bool f16_out, std::uint16_t* inter_out,
                           cudaStream_t stream);

}  // namespace mxmoe::kernels
