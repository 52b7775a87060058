// Routing ids as one rank sees them, and the sum that recombines the ranks' outputs.
#include <string>

#include "formats/bf16.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/parallel.hpp"
#include "parallel/rank_check.hpp"

namespace mxmoe {

TopK map_topk_to_rank(const TopK& topk, const ShardSpec& spec, int num_experts) {
  parallel_detail::check_rank_and_world(spec);
  if (num_experts <= 0) fail(ErrorCode::InvalidArgument, "map_topk_to_rank: expert count must be positive, got " + std::to_string(num_experts));
  if (topk.num_tokens < 0 || topk.top_k < 1)
    fail(ErrorCode::InvalidArgument, "map_topk_to_rank: need num_tokens >= 0 and top_k >= 1, got " + std::to_string(topk.num_tokens) + " and " + std::to_string(topk.top_k));
  const std::size_t n = static_cast<std::size_t>(topk.num_tokens) * static_cast<std::size_t>(topk.top_k);
  if (topk.ids.size() != n || topk.weights.size() != n)
    fail(ErrorCode::Shape, "map_topk_to_rank: ids and weights must hold num_tokens x top_k = " + std::to_string(n) + " entries, got " +
                               std::to_string(topk.ids.size()) + " ids and " + std::to_string(topk.weights.size()) + " weights");
  for (std::size_t i = 0; i < n; ++i)
    if (topk.ids[i] < -1 || topk.ids[i] >= num_experts)
      fail(ErrorCode::InvalidArgument, "map_topk_to_rank: expert id " + std::to_string(topk.ids[i]) + " of token " + std::to_string(i / topk.top_k) +
                                           ", slot " + std::to_string(i % topk.top_k) + " is outside -1.." + std::to_string(num_experts - 1));
  TopK local = topk;
  if (spec.kind == ShardKind::Tensor) return local;
  const IndexRange r = expert_range(num_experts, spec);
  for (auto& id : local.ids) id = (id >= r.begin && id < r.end) ? static_cast<std::int32_t>(id - r.begin) : -1;
  return local;
}

std::vector<std::uint16_t> combine_rank_outputs(const std::vector<std::vector<std::uint16_t>>& per_rank) {
  if (per_rank.empty()) fail(ErrorCode::InvalidArgument, "combine_rank_outputs: no rank outputs given");
  const std::size_t n = per_rank[0].size();
  for (std::size_t r = 1; r < per_rank.size(); ++r)
    if (per_rank[r].size() != n)
      fail(ErrorCode::Shape, "combine_rank_outputs: rank " + std::to_string(r) + " gave " + std::to_string(per_rank[r].size()) +
                                 " values, rank 0 gave " + std::to_string(n));
  std::vector<std::uint16_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    float sum = 0.0f;
    for (const auto& rank_out : per_rank) sum += formats::bf16_to_float(rank_out[i]);
    out[i] = formats::float_to_bf16(sum);
  }
  return out;
}

}  // namespace mxmoe
