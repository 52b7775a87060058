// Tensor- and expert-parallel MoE: how one rank's share of a layer is cut out of the full weights
// (CPU, exact: no re-quantisation), how routing ids become rank-local, how per-rank outputs
// combine, and (CUDA builds with NCCL only) a layer that runs one rank and does the collectives.
// docs/parallel.md explains the split rules.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mxmoe/config.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/weights.hpp"

struct ncclComm;
typedef struct ncclComm* ncclComm_t;

namespace mxmoe {

enum class ShardKind {
  Tensor,  // every rank holds a slice of I for every expert; outputs are summed
  Expert,  // every rank holds a contiguous range of whole experts; outputs are summed
};

struct ShardSpec {
  ShardKind kind = ShardKind::Tensor;
  int rank = 0;
  int world = 1;
};

const char* shard_kind_name(ShardKind kind);

// Half-open [begin, end).
struct IndexRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t size() const { return end - begin; }
};

// Rank `rank`'s contiguous share of n items among `world` ranks: every rank gets n / world, and
// the first n % world ranks one more. Throws mxmoe::Error unless 1 <= world <= n and 0 <= rank < world.
IndexRange split_evenly(std::int64_t n, int rank, int world);

// A tensor-parallel rank's part of the intermediate dimension: it owns `owned` (split_evenly of I)
// and stores `window`, the owned range widened to MXFP4 group (32) boundaries, so every stored
// scale group is a whole global group. Indices in the window but not owned hold zero weights.
struct TensorSlice {
  IndexRange owned;
  IndexRange window;
};
TensorSlice tensor_slice(int inter, const ShardSpec& spec);

// An expert-parallel rank's experts: split_evenly of the expert count.
IndexRange expert_range(int num_experts, const ShardSpec& spec);

// Checks rank/world against the layer (TP: world <= I; EP: world <= E); throws mxmoe::Error.
void validate_shard_spec(const ShardSpec& spec, int num_experts, int inter);

// This rank's weights as a self-contained CanonicalMoeWeights (it validates):
//  TP: inter = window size; w13 gate/up rows and w13 bias of the window, zero outside the owned
//      range; w2 columns of the window (whole scale groups), zero codes outside the owned range;
//      w2 bias on rank 0 only (zeros elsewhere, so it is added once); router and correction bias
//      shared with `full` (no copy).
//  EP: num_experts = the rank's expert count, all their tensors; no router or correction bias
//      (routing runs over all experts, before map_topk_to_rank).
// Only the rank's bytes are read and copied, so `full` may be zero-copy views of a mapped
// checkpoint. World 1 returns tensors shared with `full`.
CanonicalMoeWeights shard_weights(const CanonicalMoeWeights& full, const ShardSpec& spec);

// Routing ids as this rank sees them: TP leaves them as they are; EP maps the rank's experts to
// 0..local-1 and every other id to -1. Weights are kept. Ids outside -1..num_experts-1 throw.
TopK map_topk_to_rank(const TopK& topk, const ShardSpec& spec, int num_experts);

// The layer output from the per-rank outputs (bf16 bits, each [T, H]): their sum in fp32,
// rounded to bf16 once. All must have the same size.
std::vector<std::uint16_t> combine_rank_outputs(const std::vector<std::vector<std::uint16_t>>& per_rank);

// ---- CUDA builds with NCCL only (src/parallel/*.cu) ----

// Whether a rank's token rows are all the layer's tokens, or this rank's equal share of them
// (sequence parallel: rank r holds rows [r*T/W, (r+1)*T/W) of the T tokens).
enum class TokenLayout { Replicated, Sequence };

struct ParallelOptions {
  ShardSpec shard;
  ncclComm_t comm = nullptr;  // a communicator of `shard.world` ranks; unused (may be null) when world == 1
  TokenLayout input = TokenLayout::Replicated;
  TokenLayout output = TokenLayout::Replicated;
};

// One rank of a tensor- or expert-parallel MoE layer. Each rank constructs it on its own device
// with the same full weights (views of a checkpoint are fine: only the rank's slice is copied)
// and calls forward with global routing ids; collectives run on the given stream:
//   Sequence input: all-gather hidden, ids and weights from every rank (equal token counts);
//   EP: ids mapped to local on the device (others -1);
//   local MoeLayer forward into a workspace of all T tokens;
//   Replicated output: all-reduce (bf16 sum); Sequence output: reduce-scatter (T % world == 0).
// World 1 runs the same path with no collective. MoeLayerOptions::max_tokens is the largest T
// over all ranks (the gathered count under Sequence input).
class ParallelMoeLayer {
 public:
  ParallelMoeLayer(const CanonicalMoeWeights& full, const ParallelOptions& parallel, const MoeLayerOptions& options);
  ~ParallelMoeLayer();
  ParallelMoeLayer(const ParallelMoeLayer&) = delete;
  ParallelMoeLayer& operator=(const ParallelMoeLayer&) = delete;

  // Device pointers. hidden bf16 [num_tokens, H], topk_ids int32 (global ids) and topk_weights
  // fp32 [num_tokens, k], where num_tokens is this rank's row count (all T under Replicated
  // input, T / world under Sequence input). out bf16: [T, H] (Replicated output) or
  // [T / world, H] (Sequence output). Ids of -1 or >= E contribute nothing.
  void forward(const void* hidden, const std::int32_t* topk_ids, const float* topk_weights, void* out,
               int num_tokens, cudaStream_t stream) const;

  // The total token count forward sees for `num_tokens` rows given on this rank.
  int total_tokens(int num_tokens) const;
  const ShardSpec& shard() const;
  const MoeLayer& local_layer() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mxmoe
