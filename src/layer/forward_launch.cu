// The forward's launch sequence (see forward_launch.hpp); MoeLayer and the C ABI both run it.
#include "layer/forward_launch.hpp"

#include <algorithm>
#include <string>

#include "kernels/align.hpp"
#include "kernels/combine.hpp"
#include "kernels/moe_gemm.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::layer {

namespace {
std::size_t round_up(std::size_t n) { return (n + 255) / 256 * 256; }
}  // namespace

WorkspaceLayout workspace_layout(int E, int H, int I, int max_tokens, int top_k) {
  const std::size_t pairs = static_cast<std::size_t>(max_tokens) * top_k;
  std::size_t max_blocks = 0, max_slots = 0;
  for (GemmTile tile : {GemmTile::Tiny, GemmTile::Decode, GemmTile::Small, GemmTile::Medium, GemmTile::Prefill, GemmTile::Wgmma}) {
    const int bt = kernels::gemm_tokens_per_block(tile);
    const std::size_t blocks = kernels::max_align_blocks(static_cast<int>(pairs), E, bt);
    max_blocks = std::max(max_blocks, blocks);
    max_slots = std::max(max_slots, blocks * bt);
  }
  // Slot outputs; tiny batches may split GEMM2's K in two, each split writing its own copy.
  const std::size_t partial_pairs = std::max(pairs, static_cast<std::size_t>(2 * top_k * kernels::kTinyGemm2Splits));
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
  l.inter = take(pairs * I * 2);
  l.partial = take(partial_pairs * H * 4);
  l.routed_ids = take(pairs * 4);
  l.routed_weights = take(pairs * 4);
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
  auto* sorted_pairs = reinterpret_cast<std::int32_t*>(base + ws.sorted_pairs);
  auto* block_expert = reinterpret_cast<std::int32_t*>(base + ws.block_expert);
  auto* num_blocks = reinterpret_cast<std::int32_t*>(base + ws.num_blocks);
  auto* inter = reinterpret_cast<std::uint16_t*>(base + ws.inter);
  auto* partial = reinterpret_cast<float*>(base + ws.partial);
  const int E = w.num_experts, H = w.hidden, T = a.num_tokens, k = a.top_k;

  const GemmTile kind = tile == GemmTile::Auto ? kernels::choose_gemm(T, k, E, a.batch_invariant) : tile;
  const int bt = kernels::gemm_tokens_per_block(kind);
  const int pairs = T * k;
  const int max_blocks = kernels::max_align_blocks(pairs, E, bt);
  kernels::launch_align(a.topk_ids, pairs, E, bt, sorted_pairs, block_expert, num_blocks, stream);

  const tiling::TiledShape s13 = w.w13_shape(), s2 = w.w2_shape();
  kernels::MoeGemmParams p{};
  p.num_experts = E;
  p.sorted_pairs = sorted_pairs;
  p.block_expert = block_expert;
  p.num_blocks = num_blocks;

  p.weights = w.w13;
  p.scales = w.w13_scale;
  p.expert_weight_stride = s13.weight_bytes();
  p.expert_scale_stride = s13.scale_bytes();
  p.shape = s13;
  p.act = static_cast<const std::uint16_t*>(a.hidden);
  p.act_row_divisor = k;
  p.bias = w.w13_bias;
  p.global_scale = w.w13_global_scale;
  p.row_factor = w.w13_row_factor;
  p.inter_out = inter;
  p.act_kind = act.kind;
  p.act_limit = act.limit;
  p.act_alpha = act.alpha;
  kernels::launch_moe_gemm1(kind, w.format, p, max_blocks, stream);

  p.weights = w.w2;
  p.scales = w.w2_scale;
  p.expert_weight_stride = s2.weight_bytes();
  p.expert_scale_stride = s2.scale_bytes();
  p.shape = s2;
  p.act = inter;
  p.act_row_divisor = 1;
  p.bias = w.w2_bias;
  p.global_scale = w.w2_global_scale;
  p.row_factor = w.w2_row_factor;
  p.pair_weights = a.topk_weights;
  p.partial_out = partial;
  // Fewer GEMM2 CTAs than three per SM leave SMs idle at the end: split K in two (the combine adds
  // the halves in a fixed order, so results stay deterministic), unless batch-invariant.
  p.k_splits = kernels::gemm2_k_splits(kind, H, max_blocks, sm_count, a.batch_invariant);
  p.partial_split_stride = static_cast<std::int64_t>(pairs) * H;
  kernels::launch_moe_gemm2(kind, w.format, p, max_blocks, stream);

  kernels::launch_combine(partial, p.k_splits, p.partial_split_stride, a.topk_ids, T, k, H, E, w.f16_activations(),
                          static_cast<std::uint16_t*>(a.out), stream);
}

}  // namespace mxmoe::layer
