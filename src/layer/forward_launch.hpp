// The forward's launch sequence over borrowed memory: prepared weights and one workspace that the
// caller owns (MoeLayer's own buffer, or a tensor of torch's caching allocator for the C ABI).
// align -> GEMM1 + activation -> GEMM2 x router weight -> combine, one stream, no host sync; each
// GEMM in one or two lanes (kernels::GemmLanes); one or two tokens skip the alignment (direct blocks).
// W4A8 (PreparedWeightsView::fp8_activations) quantises the hidden states after the alignment and
// the intermediate after GEMM1; the GEMMs' plan is W4A16's (every configuration runs both).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/moe_gemm.hpp"
#include "kernels/tile_layout.hpp"
#include "mxmoe/config.hpp"
#include "mxmoe/moe_layer.hpp"

namespace mxmoe::layer {

// Prepared (tiled) weights of every expert, all on one device; biases canonical fp32 or null;
// NVFP4's global scales fp32 [E, 2] and [E] (null for MXFP4); Mxfp4Shifted's per-row factors 2^d fp32
// [E, 2I] and [E, H], canonical row order (null for the other formats; E x (2I + H) x 4 bytes).
// `format` (kernels::choose_gemm_format)
// says how the kernels read the scales, and whether activations are bf16 or fp16.
struct PreparedWeightsView {
  const std::uint8_t *w13 = nullptr, *w13_scale = nullptr, *w2 = nullptr, *w2_scale = nullptr;
  const float *w13_bias = nullptr, *w2_bias = nullptr;
  int num_experts = 0, hidden = 0, inter = 0;
  const float *w13_global_scale = nullptr, *w2_global_scale = nullptr;
  const float *w13_row_factor = nullptr, *w2_row_factor = nullptr;
  kernels::GemmFormat format = kernels::GemmFormat::Mxfp4;

  int group() const { return format == kernels::GemmFormat::Nvfp4Bf16 || format == kernels::GemmFormat::Nvfp4F16 ? 16 : 32; }
  bool f16_activations() const { return format == kernels::GemmFormat::Nvfp4F16; }
  // W4A8: both GEMMs take e4m3 activations, quantised per row in the forward (kernels/quantize_e4m3).
  bool fp8_activations() const { return format == kernels::GemmFormat::Mxfp4E4m3; }
  tiling::TiledShape w13_shape() const { return {2 * inter, hidden, true, group(), f16_activations()}; }
  tiling::TiledShape w2_shape() const { return {hidden, inter, false, group(), f16_activations()}; }
  std::int64_t expert_weight_bytes() const { return w13_shape().weight_bytes() + w2_shape().weight_bytes(); }
  // What the GEMM plan (kernels::plan_gemm_lanes) reads of a forward of `num_tokens` on these weights.
  kernels::GemmProblem gemm_problem(int num_tokens, int top_k, bool batch_invariant, int sm_count) const {
    return {num_tokens, top_k, num_experts, expert_weight_bytes(), batch_invariant, fp8_activations(), hidden, inter, sm_count};
  }
};

// Byte offsets of the workspace's parts for forwards of up to `max_tokens` tokens; each part starts
// on a 256-byte boundary. Routing output (ids, weights) is part of it for the logits entry point.
struct WorkspaceLayout {
  std::size_t sorted_pairs = 0, block_expert = 0, num_blocks = 0;                 // the narrow lane's block list
  std::size_t wide_sorted_pairs = 0, wide_block_expert = 0, wide_num_blocks = 0;  // the wide lane's
  std::size_t inter = 0, partial = 0, routed_ids = 0, routed_weights = 0;
  std::size_t gate_up_partial = 0;  // GEMM1's split sums (kernels::gemm1_split_partial_floats)
  // W4A8 only (empty otherwise): the hidden states and the intermediate as e4m3 rows, a scale per row.
  std::size_t hidden_e4m3 = 0, hidden_scale = 0, inter_e4m3 = 0, inter_scale = 0;
  std::size_t total = 0;
};
WorkspaceLayout workspace_layout(int num_experts, int hidden, int inter, int max_tokens, int top_k, bool fp8_activations = false);

struct ForwardArgs {
  const void* hidden;            // bf16 or fp16 (PreparedWeightsView::f16_activations) [T, H]
  const std::int32_t* topk_ids;  // [T, k]; -1 or >= E: skipped
  const float* topk_weights;     // [T, k]
  void* out;                     // as hidden [T, H]
  int num_tokens, top_k;
  // A token's output bit-identical whatever batch it rides in (kernels::choose_gemm says how).
  bool batch_invariant = false;
};

// InvalidArgument naming `entry` and `name` when `p` is null or not `alignment`-byte aligned: the
// pointer checks of every forward entry point (MoeLayer, the C ABI).
void check_device_pointer(const void* p, std::size_t alignment, const char* entry, const char* name);

// Launches the forward. `workspace` holds workspace_layout(..., max_tokens >= num_tokens, top_k).total
// bytes; `sm_count` is the device's SM count (the split-K choice of the tiniest batches). NVFP4 views
// carry both global scales: the callers check that once, with their own messages (MoeLayer through
// CanonicalMoeWeights::validate at construction, the C ABI's forward per call), not this hot path.
void launch_forward(const PreparedWeightsView& w, const ActivationConfig& act, GemmTile tile, int sm_count,
                    void* workspace, const WorkspaceLayout& ws, const ForwardArgs& a, cudaStream_t stream);

}  // namespace mxmoe::layer
