// One rank of a tensor- or expert-parallel MoE layer: the rank's MoeLayer plus the NCCL
// collectives around it (all-gather of sequence-sharded input, all-reduce or reduce-scatter of
// the output). Small-batch scheme only: every rank runs all T tokens (see docs/parallel.md).
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <utility>

#include "mxmoe/device_buffer.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/parallel.hpp"

namespace mxmoe {
namespace {

void check_nccl(ncclResult_t res, ncclComm_t comm, const std::string& what) {
  if (res == ncclSuccess) return;
  std::string detail = ncclGetErrorString(res);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && last[0] != '\0') detail += std::string(" (") + last + ")";
  }
  fail(ErrorCode::Cuda, "parallel layer: " + what + " failed: " + detail);
}

// Global expert ids -> this rank's local ids; everything outside [begin, end) becomes -1.
__global__ void map_ids_to_rank(const std::int32_t* global_ids, std::int32_t* local_ids, int count, int begin, int end) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const std::int32_t id = global_ids[i];
  local_ids[i] = (id >= begin && id < end) ? id - begin : -1;
}

constexpr std::size_t kBf16Bytes = 2;

}  // namespace

struct ParallelMoeLayer::Impl {
  ParallelOptions parallel;
  MoeLayerOptions options;
  int hidden = 0;
  IndexRange experts;  // EP: this rank's global experts; TP: all of them
  std::unique_ptr<MoeLayer> layer;
  DeviceBuffer gathered_hidden, gathered_ids, gathered_weights;  // Sequence input
  DeviceBuffer local_ids;                                        // EP
  DeviceBuffer partial_out;                                      // Sequence output, world > 1
};

namespace {

void check_communicator(const ParallelOptions& p, int device) {
  const ShardSpec& s = p.shard;
  if (s.world == 1) return;
  if (p.comm == nullptr)
    fail(ErrorCode::InvalidArgument, "parallel layer: world size " + std::to_string(s.world) + " needs an NCCL communicator, got none");
  int count = 0, rank = 0, comm_device = 0;
  check_nccl(ncclCommCount(p.comm, &count), p.comm, "ncclCommCount");
  check_nccl(ncclCommUserRank(p.comm, &rank), p.comm, "ncclCommUserRank");
  check_nccl(ncclCommCuDevice(p.comm, &comm_device), p.comm, "ncclCommCuDevice");
  if (count != s.world || rank != s.rank)
    fail(ErrorCode::InvalidArgument, "parallel layer: the communicator has " + std::to_string(count) + " ranks and this is rank " + std::to_string(rank) +
                                         ", but the shard spec says rank " + std::to_string(s.rank) + " of " + std::to_string(s.world));
  if (comm_device != device)
    fail(ErrorCode::InvalidArgument, "parallel layer: the communicator is on CUDA device " + std::to_string(comm_device) + ", the layer on device " +
                                         std::to_string(device));
}

}  // namespace

ParallelMoeLayer::ParallelMoeLayer(const CanonicalMoeWeights& full, const ParallelOptions& parallel, const MoeLayerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  validate_shard_spec(parallel.shard, full.num_experts, full.inter);
  if (parallel.input != TokenLayout::Replicated && parallel.input != TokenLayout::Sequence)
    fail(ErrorCode::InvalidArgument, "parallel layer: unknown input token layout " + std::to_string(static_cast<int>(parallel.input)));
  if (parallel.output != TokenLayout::Replicated && parallel.output != TokenLayout::Sequence)
    fail(ErrorCode::InvalidArgument, "parallel layer: unknown output token layout " + std::to_string(static_cast<int>(parallel.output)));
  if (options.max_tokens < 1 || options.top_k < 1)
    fail(ErrorCode::InvalidArgument, "parallel layer: max_tokens and top_k must be at least 1, got " + std::to_string(options.max_tokens) + " and " +
                                         std::to_string(options.top_k));
  check_communicator(parallel, options.device);
  check_cuda(cudaSetDevice(options.device), "parallel layer: cudaSetDevice(" + std::to_string(options.device) + ")");

  Impl& m = *impl_;
  m.parallel = parallel;
  m.options = options;
  m.hidden = full.hidden;
  m.experts = parallel.shard.kind == ShardKind::Expert ? expert_range(full.num_experts, parallel.shard) : IndexRange{0, full.num_experts};
  {
    // The host copy of this rank's slice lives only until the layer has uploaded it.
    const CanonicalMoeWeights local = shard_weights(full, parallel.shard);
    m.layer = std::make_unique<MoeLayer>(local, options);
  }
  const std::size_t T = static_cast<std::size_t>(options.max_tokens), H = static_cast<std::size_t>(full.hidden),
                    k = static_cast<std::size_t>(options.top_k);
  if (parallel.input == TokenLayout::Sequence && parallel.shard.world > 1) {
    m.gathered_hidden = DeviceBuffer(T * H * kBf16Bytes, "the gathered hidden states");
    m.gathered_ids = DeviceBuffer(T * k * sizeof(std::int32_t), "the gathered top-k ids");
    m.gathered_weights = DeviceBuffer(T * k * sizeof(float), "the gathered top-k weights");
  }
  if (parallel.shard.kind == ShardKind::Expert) m.local_ids = DeviceBuffer(T * k * sizeof(std::int32_t), "the rank-local top-k ids");
  if (parallel.output == TokenLayout::Sequence && parallel.shard.world > 1)
    m.partial_out = DeviceBuffer(T * H * kBf16Bytes, "the partial output before reduce-scatter");
}

ParallelMoeLayer::~ParallelMoeLayer() = default;

int ParallelMoeLayer::total_tokens(int num_tokens) const {
  return impl_->parallel.input == TokenLayout::Sequence ? num_tokens * impl_->parallel.shard.world : num_tokens;
}

const ShardSpec& ParallelMoeLayer::shard() const { return impl_->parallel.shard; }

const MoeLayer& ParallelMoeLayer::local_layer() const { return *impl_->layer; }

void ParallelMoeLayer::forward(const void* hidden, const std::int32_t* topk_ids, const float* topk_weights, void* out, int num_tokens,
                               cudaStream_t stream) const {
  const Impl& m = *impl_;
  const int world = m.parallel.shard.world, k = m.options.top_k;
  const ncclComm_t comm = m.parallel.comm;
  if (hidden == nullptr || topk_ids == nullptr || topk_weights == nullptr || out == nullptr)
    fail(ErrorCode::InvalidArgument, "parallel layer forward: hidden, topk_ids, topk_weights and out must all be device pointers, got a null one");
  if (num_tokens < 1) fail(ErrorCode::InvalidArgument, "parallel layer forward: num_tokens must be at least 1, got " + std::to_string(num_tokens));
  const int T = total_tokens(num_tokens);
  if (T > m.options.max_tokens)
    fail(ErrorCode::InvalidArgument, "parallel layer forward: " + std::to_string(T) + " tokens over all ranks exceed max_tokens = " +
                                         std::to_string(m.options.max_tokens));
  if (m.parallel.output == TokenLayout::Sequence && T % world != 0)
    fail(ErrorCode::InvalidArgument, "parallel layer forward: sequence-parallel output needs the token count (" + std::to_string(T) +
                                         ") to be a multiple of the world size " + std::to_string(world));
  const std::size_t H = static_cast<std::size_t>(m.hidden);

  const void* x = hidden;
  const std::int32_t* ids = topk_ids;
  const float* weights = topk_weights;
  if (m.parallel.input == TokenLayout::Sequence && world > 1) {
    const std::size_t rows = static_cast<std::size_t>(num_tokens);
    check_nccl(ncclGroupStart(), comm, "ncclGroupStart");
    check_nccl(ncclAllGather(hidden, m.gathered_hidden.as<void>(), rows * H, ncclBfloat16, comm, stream), comm, "ncclAllGather of hidden");
    check_nccl(ncclAllGather(topk_ids, m.gathered_ids.as<void>(), rows * k, ncclInt32, comm, stream), comm, "ncclAllGather of top-k ids");
    check_nccl(ncclAllGather(topk_weights, m.gathered_weights.as<void>(), rows * k, ncclFloat32, comm, stream), comm,
               "ncclAllGather of top-k weights");
    check_nccl(ncclGroupEnd(), comm, "ncclGroupEnd (all-gather)");
    x = m.gathered_hidden.as<void>();
    ids = m.gathered_ids.as<std::int32_t>();
    weights = m.gathered_weights.as<float>();
  }

  if (m.parallel.shard.kind == ShardKind::Expert) {
    const int count = T * k, threads = 256;
    map_ids_to_rank<<<(count + threads - 1) / threads, threads, 0, stream>>>(ids, m.local_ids.as<std::int32_t>(), count,
                                                                              static_cast<int>(m.experts.begin), static_cast<int>(m.experts.end));
    check_cuda(cudaGetLastError(), "parallel layer: launch of map_ids_to_rank");
    ids = m.local_ids.as<std::int32_t>();
  }

  const bool scatter = m.parallel.output == TokenLayout::Sequence && world > 1;
  void* dest = scatter ? m.partial_out.as<void>() : out;
  m.layer->forward(x, ids, weights, dest, T, stream);

  if (world == 1) return;
  // bf16 sum across ranks: NCCL rounds to bf16 after each reduction step (docs/parallel.md).
  if (scatter)
    check_nccl(ncclReduceScatter(dest, out, static_cast<std::size_t>(T / world) * H, ncclBfloat16, ncclSum, comm, stream), comm,
               "ncclReduceScatter of the output");
  else
    check_nccl(ncclAllReduce(out, out, static_cast<std::size_t>(T) * H, ncclBfloat16, ncclSum, comm, stream), comm, "ncclAllReduce of the output");
}

}  // namespace mxmoe
