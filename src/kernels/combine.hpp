// Sum of a token's top-k weighted expert outputs, in slot order (deterministic), to bf16 or fp16.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mxmoe::kernels {

// out[t, h] = bf16 or fp16 (f16_out) of (sum over slots s with 0 <= ids[t,k+s] < E, and over the K splits z, of
// partial[z * split_stride + (t*k+s) * H + h]), in slot order then split order; partial rows of
// skipped slots are never read (they may hold anything).
void launch_combine(const float* partial, int splits, std::int64_t split_stride, const std::int32_t* topk_ids,
                    int num_tokens, int top_k, int hidden, int num_experts, bool f16_out, std::uint16_t* out,
                    cudaStream_t stream);

}  // namespace mxmoe::kernels
