// ParallelMoeLayer over 2 and 4 GPUs of one host (one thread per rank, ncclCommInitAll): every
// rank's output against the single-GPU MoeLayer, for TP and EP, replicated and sequence-parallel
// token layouts; and forward timings for the record. Skips, saying why, with fewer than 2 Hopper GPUs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/parallel.hpp"

#ifdef MXMOE_HAVE_NCCL
#include <nccl.h>
#endif

using namespace mxmoe;

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

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

template <class T>
T* upload(const T* host, std::size_t n) {
  T* d = nullptr;
  check(cudaMalloc(&d, n * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(d, host, n * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

double relative_frobenius(const std::uint16_t* got, const std::uint16_t* want, std::size_t n) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = formats::bf16_to_float(got[i]), w = formats::bf16_to_float(want[i]);
    if (!std::isfinite(g)) return INFINITY;
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  return std::sqrt(diff / norm);
}

struct Problem {
  CanonicalMoeWeights weights;
  int T = 0, k = 0;
  std::vector<std::uint16_t> hidden;
  std::vector<std::int32_t> ids;
  std::vector<float> topk_weights;
  ActivationConfig act = ActivationConfig::gpt_oss();
};

Problem make_problem(int E, int T, int k, std::uint64_t seed) {
  Problem p;
  SyntheticSpec spec;  // gpt-oss's H = I = 2880
  spec.num_experts = E;
  spec.hidden = 2880;
  spec.inter = 2880;
  spec.with_biases = true;
  spec.seed = seed;
  p.weights = make_synthetic_weights(spec);
  p.T = T;
  p.k = k;
  SplitMix64 rng(seed + 1);
  p.hidden.resize(static_cast<std::size_t>(T) * 2880);
  for (auto& v : p.hidden) v = formats::float_to_bf16(static_cast<float>(rng.normal() * 4.0));
  for (int t = 0; t < T; ++t) {
    std::vector<int> chosen;
    while (static_cast<int>(chosen.size()) < k) {
      const int e = static_cast<int>(rng.next() % E);
      bool seen = false;
      for (int c : chosen) seen |= c == e;
      if (!seen) chosen.push_back(e);
    }
    for (int s = 0; s < k; ++s) {
      p.ids.push_back(s == 0 && t % 5 == 0 ? -1 : chosen[s]);
      p.topk_weights.push_back(static_cast<float>(0.1 + rng.uniform()));
    }
  }
  return p;
}

// The single-GPU result on device 0.
std::vector<std::uint16_t> single_gpu(const Problem& p) {
  check(cudaSetDevice(0), "cudaSetDevice");
  MoeLayerOptions o;
  o.max_tokens = p.T;
  o.top_k = p.k;
  o.activation = p.act;
  MoeLayer layer(p.weights, o);
  auto* x = upload(p.hidden.data(), p.hidden.size());
  auto* ids = upload(p.ids.data(), p.ids.size());
  auto* w = upload(p.topk_weights.data(), p.topk_weights.size());
  std::uint16_t* out = nullptr;
  check(cudaMalloc(&out, p.hidden.size() * 2), "cudaMalloc");
  layer.forward(x, ids, w, out, p.T, nullptr);
  std::vector<std::uint16_t> h(p.hidden.size());
  check(cudaMemcpy(h.data(), out, h.size() * 2, cudaMemcpyDeviceToHost), "download");
  for (void* d : {static_cast<void*>(x), static_cast<void*>(ids), static_cast<void*>(w), static_cast<void*>(out)}) cudaFree(d);
  return h;
}

struct RankResult {
  std::vector<std::uint16_t> out;
  float forward_us = 0.0f;
  std::exception_ptr error;
};

// Runs every rank in its own thread; each returns its output (and mean forward time when timing).
std::vector<RankResult> run_ranks(const Problem& p, ShardKind kind, int world, TokenLayout in, TokenLayout out_layout, int timed_iters) {
  std::vector<ncclComm_t> comms(world);
  std::vector<int> devices(world);
  for (int r = 0; r < world; ++r) devices[r] = r;
  if (ncclCommInitAll(comms.data(), world, devices.data()) != ncclSuccess) throw std::runtime_error("ncclCommInitAll failed");
  std::vector<RankResult> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        check(cudaSetDevice(r), "cudaSetDevice");
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
        auto* x = upload(p.hidden.data() + first * 2880, static_cast<std::size_t>(rows_in) * 2880);
        auto* ids = upload(p.ids.data() + first * p.k, static_cast<std::size_t>(rows_in) * p.k);
        auto* w = upload(p.topk_weights.data() + first * p.k, static_cast<std::size_t>(rows_in) * p.k);
        const int rows_out = out_layout == TokenLayout::Sequence ? p.T / world : p.T;
        std::uint16_t* out = nullptr;
        check(cudaMalloc(&out, static_cast<std::size_t>(rows_out) * 2880 * 2), "cudaMalloc");
        check(cudaMemset(out, 0xFF, static_cast<std::size_t>(rows_out) * 2880 * 2), "poison");
        cudaStream_t stream = nullptr;
        check(cudaStreamCreate(&stream), "cudaStreamCreate");
        layer.forward(x, ids, w, out, rows_in, stream);
        check(cudaStreamSynchronize(stream), "forward");
        results[r].out.resize(static_cast<std::size_t>(rows_out) * 2880);
        check(cudaMemcpy(results[r].out.data(), out, results[r].out.size() * 2, cudaMemcpyDeviceToHost), "download");
        if (timed_iters > 0) {
          cudaEvent_t start, stop;
          check(cudaEventCreate(&start), "cudaEventCreate");
          check(cudaEventCreate(&stop), "cudaEventCreate");
          check(cudaEventRecord(start, stream), "cudaEventRecord");
          for (int i = 0; i < timed_iters; ++i) layer.forward(x, ids, w, out, rows_in, stream);
          check(cudaEventRecord(stop, stream), "cudaEventRecord");
          check(cudaEventSynchronize(stop), "timing");
          float ms = 0.0f;
          check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
          results[r].forward_us = ms * 1000.0f / timed_iters;
          cudaEventDestroy(start);
          cudaEventDestroy(stop);
        }
        cudaStreamDestroy(stream);
        for (void* d : {static_cast<void*>(x), static_cast<void*>(ids), static_cast<void*>(w), static_cast<void*>(out)}) cudaFree(d);
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
        const std::vector<RankResult> results = run_ranks(p, kind, world, layout, layout, 0);
        rethrow_rank_errors(results, what);
        for (int r = 0; r < world; ++r) {
          const std::size_t rows = layout == TokenLayout::Sequence ? p.T / world : p.T;
          const std::size_t first = layout == TokenLayout::Sequence ? r * rows : 0;
          EXPECT_LT(relative_frobenius(results[r].out.data(), want.data() + first * 2880, rows * 2880), kTolerance) << what << " rank " << r;
          if (layout == TokenLayout::Replicated) {
            EXPECT_EQ(results[r].out, results[0].out) << what << ": ranks disagree";
          }
        }
      }
  }
}

// Prints mean forward time per rank (gpt-oss-20b shape, E = 32, k = 4) for bench/results.
TEST(ParallelMultiGpu, Timings) {
  std::string why;
  const int gpus = hopper_count(why);
  if (gpus < 2) GTEST_SKIP() << "GPU test skipped: needs 2 or more Hopper GPUs (" << why << ")";
  for (int T : {1, 64, 1024}) {
    const Problem p = make_problem(32, T * 4, 4, 909);  // T x 4 tokens so that sequence layouts divide
    for (int world : {2, 4}) {
      if (world > gpus) continue;
      for (ShardKind kind : {ShardKind::Tensor, ShardKind::Expert}) {
        const std::string what = describe(kind, world, TokenLayout::Replicated, TokenLayout::Replicated);
        const std::vector<RankResult> results = run_ranks(p, kind, world, TokenLayout::Replicated, TokenLayout::Replicated, 20);
        rethrow_rank_errors(results, what);
        float worst = 0.0f;
        for (const auto& r : results) worst = std::max(worst, r.forward_us);
        std::printf("  parallel timing: gpt-oss-20b shape T=%d %s: %.1f us per forward (slowest rank)\n", p.T, what.c_str(), worst);
      }
    }
  }
}

#endif  // MXMOE_HAVE_NCCL
