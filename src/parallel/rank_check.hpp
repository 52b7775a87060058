// The part of a shard spec's validation that needs no layer shape: 1 <= world, 0 <= rank < world.
#pragma once

#include "mxmoe/parallel.hpp"

namespace mxmoe::parallel_detail {

void check_rank_and_world(const ShardSpec& spec);

}  // namespace mxmoe::parallel_detail
