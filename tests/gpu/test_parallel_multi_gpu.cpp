// ParallelMoeLayer over 2 and 4 GPUs of one host (one thread per rank, ncclCommInitAll): every
// rank's output against the single-GPU MoeLayer, for TP and EP, replicated and sequence-parallel
// token layouts. Timings belong to the bench. Skips, saying why, with fewer than 2 Hopper GPUs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "mxmoe/device_buffer.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/parallel.hpp"
#include "mxmoe/presets.hpp"
#include "mxmoe/verify.hpp"

#ifdef MXMOE_HAVE_NCCL
#include <nccl.h>
#endif

using namespace mxmoe;
using namespace mxmoe::verify;

#ifndef MXMOE_HAVE_NCCL

TEST(ParallelMultiGpu, NeedsNccl) { GTEST_SKIP() << "GPU test skipped: this build found no NCCL, so ParallelMoeLayer is not compiled"; }

#else

namespace {

constexpr double kTolerance = 1e-2;  // bf16 partial sums vs the single-GPU result (docs/parallel.md)

// The number of Hopper GPUs, or 0 with the reason in `why`.
int hopper_count(std::string& why) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    why = "no CUDA device";
    return 0;
  }
  for (int d = 0; d < count; ++d) {
    const DeviceCheck c = check_hopper_device(d);
    if (!c.ok) {
      why = c.message;
      return 0;
    }
  }
  why = std::to_string(count) + " GPU(s)";
  return count;
}

struct Problem {
  CanonicalMoeWeights weights;
  int T = 0, k = 0, H = 0;
  std::vector<std::uint16_t> hidden;
  TopK topk;
  ActivationConfig act;
};

// gpt-oss-20b's shape and activation (include/mxmoe/presets.hpp) with E experts; slot 0 of every
// fifth token is -1.
Problem make_problem(int E, int T, int k, std::uint64_t seed) {
  const ModelPreset preset = find_preset("gpt-oss-20b");
  Problem p;
  SyntheticSpec spec;
  spec.num_experts = E;
  spec.hidden = preset.hidden;
  spec.inter = preset.inter;
  spec.with_biases = preset.biases;
  spec.seed = seed;
  p.weights = make_synthetic_weights(spec);
  p.T = T;
  p.k = k;
  p.H = preset.hidden;
  p.act = preset.activation;
  p.hidden = random_hidden(T, p.H, seed + 1, 4.0);
  p.topk = random_topk(T, E, k, seed + 2, TopKMask::slot_of_every(0, 5));
  return p;
}

// Rows [first, first + rows) of the problem's inputs on the current device.
struct DeviceInputs {
  DeviceBuffer hidden, ids, weights;
  DeviceInputs(const Problem& p, std::size_t first, std::size_t rows)
      : hidden(rows * p.H * 2, "hidden"), ids(rows * p.k * 4, "top-k ids"), weights(rows * p.k * 4, "top-k weights") {
    hidden.upload(p.hidden.data() + first * p.H, hidden.bytes());
    ids.upload(p.topk.ids.data() + first * p.k, ids.bytes());
    weights.upload(p.topk.weights.data() + first * p.k, weights.bytes());
  }
};

// The single-GPU result on device 0.
std::vector<std::uint16_t> single_gpu(const Problem& p) {
  check_cuda(cudaSetDevice(0), "cudaSetDevice");
  MoeLayerOptions o;
  o.max_tokens = p.T;
  o.top_k = p.k;
  o.activation = p.act;
  MoeLayer layer(p.weights, o);
  const DeviceInputs in(p, 0, p.T);
  DeviceBuffer out(p.hidden.size() * 2, "single-GPU output");
  layer.forward(in.hidden.as(), in.ids.as<std::int32_t>(), in.weights.as<float>(), out.as(), p.T, nullptr);
  check_cuda(cudaDeviceSynchronize(), "single-GPU forward");
  return out.to_host<std::uint16_t>();
}

struct RankResult {
  std::vector<std::uint16_t> out;
  std::exception_ptr error;
};

// Runs every rank in its own thread; each returns its output.
std::vector<RankResult> run_ranks(const Problem& p, ShardKind kind, int world, TokenLayout in, TokenLayout out_layout) {
  std::vector<ncclComm_t> comms(world);
  std::vector<int> devices(world);
  for (int r = 0; r < world; ++r) devices[r] = r;
  if (ncclCommInitAll(comms.data(), world, devices.data()) != ncclSuccess) throw std::runtime_error("ncclCommInitAll failed");
  std::vector<RankResult> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        check_cuda(cudaSetDevice(r), "cudaSetDevice");
        ParallelOptions po;
        po.shard = {kind, r, world};
        po.comm = comms[r];
        po.input = in;
        po.output = out_layout;
        MoeLayerOptions o;
        o.max_tokens = p.T;
        o.top_k = p.k;
        o.activation = p.act;
        o.device = r;
        ParallelMoeLayer layer(p.weights, po, o);
        const int rows_in = in == TokenLayout::Sequence ? p.T / world : p.T;
        const std::size_t first = in == TokenLayout::Sequence ? static_cast<std::size_t>(r) * rows_in : 0;
        const DeviceInputs x(p, first, rows_in);
        const int rows_out = out_layout == TokenLayout::Sequence ? p.T / world : p.T;
        DeviceBuffer out(static_cast<std::size_t>(rows_out) * p.H * 2, "rank output");
        out.fill(0xFF);
        cudaStream_t stream = nullptr;
        check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
        layer.forward(x.hidden.as(), x.ids.as<std::int32_t>(), x.weights.as<float>(), out.as(), rows_in, stream);
        check_cuda(cudaStreamSynchronize(stream), "forward");
        cudaStreamDestroy(stream);
        results[r].out = out.to_host<std::uint16_t>();
      } catch (...) {
        results[r].error = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto c : comms) ncclCommDestroy(c);
  return results;
}

std::string describe(ShardKind kind, int world, TokenLayout in, TokenLayout out) {
  return std::string(shard_kind_name(kind)) + " world " + std::to_string(world) + " in=" + (in == TokenLayout::Sequence ? "seq" : "rep") +
         " out=" + (out == TokenLayout::Sequence ? "seq" : "rep");
}

void rethrow_rank_errors(const std::vector<RankResult>& results, const std::string& what) {
  for (std::size_t r = 0; r < results.size(); ++r)
    if (results[r].error) {
      try {
        std::rethrow_exception(results[r].error);
      } catch (const std::exception& e) {
        FAIL() << what << " rank " << r << ": " << e.what();
      }
    }
}

}  // namespace

TEST(ParallelMultiGpu, EveryRankMatchesTheSingleGpuResult) {
  std::string why;
  const int gpus = hopper_count(why);
  if (gpus < 2) GTEST_SKIP() << "GPU test skipped: needs 2 or more Hopper GPUs (" << why << ")";
  const Problem p = make_problem(8, 48, 4, 808);  // 48 tokens: divisible by 2 and 4
  const std::vector<std::uint16_t> want = single_gpu(p);
  for (int world : {2, 4}) {
    if (world > gpus) continue;
    for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert})
      for (TokenLayout layout : {TokenLayout::Replicated, TokenLayout::Sequence}) {
        const std::string what = describe(kind, world, layout, layout);
        const std::vector<RankResult> results = run_ranks(p, kind, world, layout, layout);
        rethrow_rank_errors(results, what);
        for (int r = 0; r < world; ++r) {
          const std::size_t rows = layout == TokenLayout::Sequence ? p.T / world : p.T;
          const std::size_t first = layout == TokenLayout::Sequence ? r * rows : 0;
          EXPECT_LT(compare(results[r].out.data(), want.data() + first * p.H, rows * p.H).relative_error, kTolerance)
              << what << " rank " << r;
          if (layout == TokenLayout::Replicated) {
            EXPECT_EQ(results[r].out, results[0].out) << what << ": ranks disagree";
          }
        }
      }
  }
}

#endif  // MXMOE_HAVE_NCCL
