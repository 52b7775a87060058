// ParallelMoeLayer in a build without NCCL (libnccl or nccl.h not found at build time, or no CUDA):
// the class stays declared in mxmoe/parallel.hpp, so a program that uses it links and learns at
// run time why it cannot have it. The sharding functions and the oracle need no NCCL.
// Compiled into CUDA builds from src/layer/ and into builds without CUDA through
// src/layer/no_cuda/parallel_moe_layer_no_nccl.cpp (the CMake globs pick one folder per build).
#ifndef MXMOE_HAVE_NCCL

#include "mxmoe/error.hpp"
#include "mxmoe/parallel.hpp"

namespace mxmoe {

namespace {
[[noreturn]] void no_nccl() {
  fail(ErrorCode::Unsupported, "ParallelMoeLayer: this build of mxmoe has no NCCL (libnccl and nccl.h were not found at "
                               "build time), so it has no tensor- or expert-parallel GPU layer; rebuild with NCCL installed");
}
}  // namespace

struct ParallelMoeLayer::Impl {};

ParallelMoeLayer::ParallelMoeLayer(const CanonicalMoeWeights&, const ParallelOptions&, const MoeLayerOptions&) { no_nccl(); }
ParallelMoeLayer::~ParallelMoeLayer() = default;
// Unreachable: no object is ever constructed.
void ParallelMoeLayer::forward(const void*, const std::int32_t*, const float*, void*, int, cudaStream_t) const { no_nccl(); }
int ParallelMoeLayer::total_tokens(int) const { no_nccl(); }
const ShardSpec& ParallelMoeLayer::shard() const { no_nccl(); }
const MoeLayer& ParallelMoeLayer::local_layer() const { no_nccl(); }

}  // namespace mxmoe

#endif  // MXMOE_HAVE_NCCL
