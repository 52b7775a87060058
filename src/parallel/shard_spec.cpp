// The arithmetic of a shard: which experts or which part of the intermediate dimension a rank owns.
#include <string>

#include "formats/mxfp4.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/parallel.hpp"
#include "parallel/rank_check.hpp"

namespace mxmoe {

namespace parallel_detail {
void check_rank_and_world(const ShardSpec& spec) {
  if (spec.kind != ShardKind::Tensor && spec.kind != ShardKind::Expert)
    fail(ErrorCode::InvalidArgument, "shard: unknown shard kind " + std::to_string(static_cast<int>(spec.kind)));
  if (spec.world < 1) fail(ErrorCode::InvalidArgument, "shard: world size must be at least 1, got " + std::to_string(spec.world));
  if (spec.rank < 0 || spec.rank >= spec.world)
    fail(ErrorCode::InvalidArgument, "shard: rank " + std::to_string(spec.rank) + " is outside 0.." + std::to_string(spec.world - 1) +
                                         " (world size " + std::to_string(spec.world) + ")");
}
}  // namespace parallel_detail

const char* shard_kind_name(ShardKind kind) {
  switch (kind) {
    case ShardKind::Tensor: return "tensor-parallel";
    case ShardKind::Expert: return "expert-parallel";
  }
  return "?";
}

IndexRange split_evenly(std::int64_t n, int rank, int world) {
  parallel_detail::check_rank_and_world({ShardKind::Tensor, rank, world});
  if (n < world)
    fail(ErrorCode::InvalidArgument, "shard: cannot split " + std::to_string(n) + " items over " + std::to_string(world) + " ranks (every rank needs at least one)");
  const std::int64_t base = n / world, extra = n % world;
  IndexRange r;
  r.begin = rank * base + (rank < extra ? rank : extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

void validate_shard_spec(const ShardSpec& spec, int num_experts, int inter) {
  parallel_detail::check_rank_and_world(spec);
  const bool tensor = spec.kind == ShardKind::Tensor;
  const int n = tensor ? inter : num_experts;
  if (n <= 0)
    fail(ErrorCode::InvalidArgument, std::string("shard: ") + (tensor ? "intermediate size I" : "expert count E") + " must be positive, got " + std::to_string(n));
  if (spec.world > n)
    fail(ErrorCode::InvalidArgument, std::string("shard: ") + shard_kind_name(spec.kind) + " world size " + std::to_string(spec.world) +
                                         " exceeds " + (tensor ? "the intermediate size I = " : "the expert count E = ") + std::to_string(n));
}

TensorSlice tensor_slice(int inter, const ShardSpec& spec) {
  if (spec.kind != ShardKind::Tensor)
    fail(ErrorCode::InvalidArgument, std::string("shard: tensor_slice needs a tensor-parallel spec, got ") + shard_kind_name(spec.kind));
  if (inter <= 0 || inter % formats::kMxfp4Group != 0)
    fail(ErrorCode::Shape, "shard: the intermediate size I must be a positive multiple of 32, got " + std::to_string(inter));
  validate_shard_spec(spec, /*num_experts: unused by TP*/ 1, inter);
  TensorSlice s;
  s.owned = split_evenly(inter, spec.rank, spec.world);
  const std::int64_t g = formats::kMxfp4Group;
  s.window.begin = s.owned.begin / g * g;
  s.window.end = (s.owned.end + g - 1) / g * g;
  return s;
}

IndexRange expert_range(int num_experts, const ShardSpec& spec) {
  if (spec.kind != ShardKind::Expert)
    fail(ErrorCode::InvalidArgument, std::string("shard: expert_range needs an expert-parallel spec, got ") + shard_kind_name(spec.kind));
  validate_shard_spec(spec, num_experts, /*inter: unused by EP*/ 1);
  return split_evenly(num_experts, spec.rank, spec.world);
}

}  // namespace mxmoe
