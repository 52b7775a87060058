// The forward's launch sequence (see forward_launch.hpp); MoeLayer and the C ABI both run it.
#include "layer/forward_launch.hpp"

#include <algorithm>
#include <string>

#include "kernels/align.hpp"
#include "kernels/combine.hpp"
#include "kernels/gate_up_reduce.hpp"
#include "kernels/gemm/configs.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/quantize_e4m3.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::layer {

namespace {
std::size_t round_up(std::size_t n) { return (n + 255) / 256 * 256; }
}  // namespace

WorkspaceLayout workspace_layout(int E, int H, int I, int max_tokens, int top_k, bool fp8) {
  const std::size_t pairs = static_cast<std::size_t>(max_tokens) * top_k;
  // Either lane: the largest block list of any configuration (a forced tile runs every expert in
  // the narrow lane; the wide lane runs the plan's wide_lane_for configuration).
  std::size_t max_blocks = 0, max_slots = 0;
  kernels::gemm::for_each_config([&](auto cfg) {
    const int bt = decltype(cfg)::kTokens;
    const std::size_t blocks = kernels::max_lane_blocks(static_cast<int>(pairs), E, bt);
    max_blocks = std::max(max_blocks, blocks);
    max_slots = std::max(max_slots, blocks * bt);
  });
  // Slot outputs; small batches may split GEMM2's K, each split writing its own copy, while
  // pairs x splits <= kGemm2SplitMaxPairs (kernels::gemm2_k_splits).
  const std::size_t partial_pairs = std::max(pairs, static_cast<std::size_t>(kernels::kGemm2SplitMaxPairs));
  WorkspaceLayout l;
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes) {
    const std::size_t begin = at;
    at += round_up(bytes);
    return begin;
  };
  l.sorted_pairs = take(max_slots * 4);
  l.block_expert = take(max_blocks * 4);
  l.num_blocks = take(4);
  l.wide_sorted_pairs = take(max_slots * 4);
  l.wide_block_expert = take(max_blocks * 4);
  l.wide_num_blocks = take(4);
  l.inter = take(pairs * I * 2);
  l.partial = take(partial_pairs * H * 4);
  l.gate_up_partial = take(static_cast<std::size_t>(kernels::gemm1_split_partial_floats(static_cast<int>(pairs), I)) * 4);
  l.routed_ids = take(pairs * 4);
  l.routed_weights = take(pairs * 4);
  const std::size_t tokens = fp8 ? static_cast<std::size_t>(max_tokens) : 0, fp8_pairs = fp8 ? pairs : 0;
  l.hidden_e4m3 = take(tokens * H);
  l.hidden_scale = take(tokens * 4);
  l.inter_e4m3 = take(fp8_pairs * I);
  l.inter_scale = take(fp8_pairs * 4);
  l.total = at;
  return l;
}

void check_device_pointer(const void* p, std::size_t alignment, const char* entry, const char* name) {
  if (!p) fail(ErrorCode::InvalidArgument, std::string(entry) + ": " + name + " is null");
  if (reinterpret_cast<std::uintptr_t>(p) % alignment)
    fail(ErrorCode::InvalidArgument, std::string(entry) + ": " + name + " must be " + std::to_string(alignment) + "-byte aligned");
}

void launch_forward(const PreparedWeightsView& w, const ActivationConfig& act, GemmTile tile, int sm_count,
                    void* workspace, const WorkspaceLayout& ws, const ForwardArgs& a, cudaStream_t stream) {
  auto* base = static_cast<std::uint8_t*>(workspace);
  auto at = [base](std::size_t offset) { return reinterpret_cast<std::int32_t*>(base + offset); };
  auto* inter = reinterpret_cast<std::uint16_t*>(base + ws.inter);
  auto* partial = reinterpret_cast<float*>(base + ws.partial);
  const int E = w.num_experts, H = w.hidden, T = a.num_tokens, k = a.top_k;

  const bool fp8 = w.fp8_activations();
  const kernels::GemmLanes lanes = kernels::plan_gemm_lanes(tile, w.gemm_problem(T, k, a.batch_invariant, sm_count));
  const GemmTile kind = lanes.narrow;
  const int pairs = T * k;
  const kernels::AlignLane narrow{at(ws.sorted_pairs), at(ws.block_expert), at(ws.num_blocks), kernels::gemm_tokens_per_block(kind)};
  const kernels::AlignLane wide{at(ws.wide_sorted_pairs), at(ws.wide_block_expert), at(ws.wide_num_blocks),
                                kernels::gemm_tokens_per_block(lanes.wide)};
  if (!lanes.direct) kernels::launch_align(a.topk_ids, pairs, E, narrow, wide, lanes.wide_from, stream);
  auto* hidden_e4m3 = base + ws.hidden_e4m3;
  auto* hidden_scale = reinterpret_cast<float*>(base + ws.hidden_scale);
  auto* inter_e4m3 = base + ws.inter_e4m3;
  auto* inter_scale = reinterpret_cast<float*>(base + ws.inter_scale);
  if (fp8) kernels::launch_quantize_rows_e4m3(static_cast<const std::uint16_t*>(a.hidden), T, H, hidden_e4m3, hidden_scale, false, stream);
  // Each GEMM runs the narrow lane, then the wide one. Every block of a lane's kernel waits for its
  // predecessor before it exits (gemm/block_pairs.cuh), so each grid's completion implies the
  // completion of all before it, however many blocks a lane gets.
  auto run_lanes = [&](kernels::MoeGemmParams& p, void (*launch)(GemmTile, kernels::GemmFormat, const kernels::MoeGemmParams&, int, cudaStream_t)) {
    p.sorted_pairs = narrow.sorted_pairs;
    p.block_expert = narrow.block_expert;
    p.num_blocks = narrow.num_blocks;
    launch(kind, w.format, p, lanes.narrow_max_blocks, stream);
    if (lanes.wide_from == 0) return;  // (a K split, Tiny's, never has a wide lane: the plan says so)
    p.sorted_pairs = wide.sorted_pairs;
    p.block_expert = wide.block_expert;
    p.num_blocks = wide.num_blocks;
    launch(lanes.wide, w.format, p, lanes.wide_max_blocks, stream);
  };

  const tiling::TiledShape s13 = w.w13_shape(), s2 = w.w2_shape();
  kernels::MoeGemmParams p{};
  p.num_experts = E;
  p.k_splits = 1;
  p.direct_ids = lanes.direct ? a.topk_ids : nullptr;
  p.direct_blocks = lanes.direct ? pairs : 0;
  p.direct_groups = lanes.direct_groups;
  p.persistent_ctas = sm_count;

  p.weights = w.w13;
  p.scales = w.w13_scale;
  p.expert_weight_stride = s13.weight_bytes();
  p.expert_scale_stride = s13.scale_bytes();
  p.shape = s13;
  p.act = static_cast<const std::uint16_t*>(a.hidden);
  p.act_row_divisor = k;
  p.act_e4m3 = fp8 ? hidden_e4m3 : nullptr;
  p.act_scale = fp8 ? hidden_scale : nullptr;
  p.bias = w.w13_bias;
  p.global_scale = w.w13_global_scale;
  p.row_factor = w.w13_row_factor;
  p.inter_out = inter;
  p.act_kind = act.kind;
  p.act_limit = act.limit;
  p.act_alpha = act.alpha;
  // GEMM1's K split (tiny batches on few CTAs): the splits' sums in the workspace, then their sum
  // in split order and the activation (kernels/gate_up_reduce).
  p.k_splits = lanes.gemm1_splits;
  p.partial_out = reinterpret_cast<float*>(base + ws.gate_up_partial);
  p.partial_split_stride = static_cast<std::int64_t>(pairs) * 2 * w.inter;
  run_lanes(p, kernels::launch_moe_gemm1);
  if (lanes.gemm1_splits > 1)
    kernels::launch_gate_up_reduce(p.partial_out, lanes.gemm1_splits, p.partial_split_stride, a.topk_ids, pairs, w.inter, E, act,
                                   w.f16_activations(), inter, stream);
  if (fp8) kernels::launch_quantize_rows_e4m3(inter, pairs, w.inter, inter_e4m3, inter_scale, true, stream);

  p.weights = w.w2;
  p.scales = w.w2_scale;
  p.expert_weight_stride = s2.weight_bytes();
  p.expert_scale_stride = s2.scale_bytes();
  p.shape = s2;
  p.act = inter;
  p.act_row_divisor = 1;
  p.act_e4m3 = fp8 ? inter_e4m3 : nullptr;
  p.act_scale = fp8 ? inter_scale : nullptr;
  p.bias = w.w2_bias;
  p.global_scale = w.w2_global_scale;
  p.row_factor = w.w2_row_factor;
  p.pair_weights = a.topk_weights;
  p.partial_out = partial;
  // GEMM2's K split (kernels::gemm2_k_splits: few CTAs, each streaming a long K): the combine adds
  // the splits in a fixed order, so results stay deterministic.
  p.k_splits = lanes.gemm2_splits;
  p.partial_split_stride = static_cast<std::int64_t>(pairs) * H;
  run_lanes(p, kernels::launch_moe_gemm2);

  kernels::launch_combine(partial, p.k_splits, p.partial_split_stride, a.topk_ids, T, k, H, E, w.f16_activations(),
                          static_cast<std::uint16_t*>(a.out), stream);
}

}  // namespace mxmoe::layer
