// Layer completeness: the expert count a layer's names give must be the model's. A model folder
// missing a shard otherwise loads as a smaller layer (6 of 8 experts) that runs and even verifies.
#pragma once

#include <set>

#include "mxmoe/checkpoint.hpp"

namespace mxmoe::layout {

// Checks `ref` (num_experts already counted) against every source of the expert count:
//  - per-expert layouts: the ids found (`expert_ids`) must be 0..E-1 without a gap;
//  - the router's rows ([E, H] weight), when the layer has a router;
//  - config.json next to the checkpoint (`n_routed_experts`, `num_local_experts`, `num_experts`, at
//    the top level or under "text_config"), when present and an integer.
// mxmoe::Error (NotFound for missing experts, Shape otherwise) names the layer, the missing expert
// ids, the source of the expected count, and where they were looked for (name pattern and files).
void check_layer_complete(const Checkpoint& ckpt, const MoeLayerRef& ref, const std::set<int>& expert_ids);

// The activation dtype config.json next to the checkpoint declares ("torch_dtype", or "dtype", at the top
// or under "text_config"): F16 for "float16", BF16 otherwise or when there is no clear answer. NVFP4
// layers take it; MXFP4 layers are bf16 always.
DType config_activation_dtype(const Checkpoint& ckpt);

}  // namespace mxmoe::layout
