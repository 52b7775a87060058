// ParallelMoeLayer in a build without NCCL: declared, linked, and refusing at construction with a
// message that says why (mxmoe/parallel.hpp's NCCL layer needs libnccl at build time).
#include <gtest/gtest.h>

#include "mxmoe/parallel.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using test::expect_error;

TEST(ParallelLayerStub, WithoutNcclTheLayerSaysTheBuildLacksIt) {
#ifdef MXMOE_HAVE_NCCL
  GTEST_SKIP() << "this build has NCCL: the GPU tests cover ParallelMoeLayer";
#else
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 32;
  const CanonicalMoeWeights w = make_synthetic_weights(spec);
  ParallelOptions p;
  p.shard = {ShardKind::Tensor, 0, 1};
  MoeLayerOptions o;
  o.max_tokens = 4;
  o.top_k = 2;
  expect_error([&] { ParallelMoeLayer layer(w, p, o); }, ErrorCode::Unsupported, "this build of mxmoe has no NCCL");
#endif
}
