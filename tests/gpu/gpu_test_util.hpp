// Helpers of the device tests: problems with fresh random data, device copies, error metrics.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "formats/bf16.hpp"
#include "kernels/cuda_check.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"

namespace mxmoe::test {

#define MXMOE_REQUIRE_HOPPER()                                                       \
  do {                                                                               \
    const auto check = ::mxmoe::check_hopper_device(0);                              \
    if (!check.ok) GTEST_SKIP() << "GPU test skipped: " << check.message;            \
  } while (0)

inline void cuda_ok(cudaError_t e, const char* what) { kernels::check_cuda(e, what); }

template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  std::size_t n = 0;
  explicit DeviceArray(std::size_t count) : n(count) { cuda_ok(cudaMalloc(&ptr, count * sizeof(T) + 16), "cudaMalloc"); }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  void upload(const std::vector<T>& host) { cuda_ok(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload"); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cuda_ok(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }
  // 0xFF bytes: a bf16/fp32 NaN, so any element a kernel forgets to write fails the check.
  void poison() { cuda_ok(cudaMemset(ptr, 0xFF, n * sizeof(T)), "poison"); }
};

inline std::vector<std::uint16_t> random_hidden(int T, int H, float std, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, std);
  std::vector<std::uint16_t> h(static_cast<std::size_t>(T) * H);
  for (auto& v : h) v = formats::float_to_bf16(nd(rng));
  return h;
}

// k distinct experts per token with positive weights; experts >= E/2 masked to -1 when asked.
inline TopK random_topk(int T, int E, int k, bool mask_half, std::uint32_t seed) {
  std::mt19937 rng(seed);
  TopK r;
  r.num_tokens = T;
  r.top_k = k;
  std::vector<int> perm(E);
  for (int t = 0; t < T; ++t) {
    for (int e = 0; e < E; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    float sum = 0;
    std::vector<float> w(k);
    for (int s = 0; s < k; ++s) sum += (w[s] = 0.1f + std::uniform_real_distribution<float>(0, 1)(rng));
    for (int s = 0; s < k; ++s) {
      r.ids.push_back(mask_half && perm[s] >= E / 2 ? -1 : perm[s]);
      r.weights.push_back(w[s] / sum);
    }
  }
  return r;
}

// ||a - b|| / ||b|| over bf16 arrays; infinity when a holds a NaN or Inf.
inline double rel_error(const std::vector<std::uint16_t>& a, const std::vector<std::uint16_t>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = formats::bf16_to_float(a[i]), y = formats::bf16_to_float(b[i]);
    if (!std::isfinite(x)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Rows `rows` of a [T, H] matrix, and the matching top-k rows.
inline std::vector<std::uint16_t> take_rows(const std::vector<std::uint16_t>& m, int H, const std::vector<int>& rows) {
  std::vector<std::uint16_t> out;
  for (int r : rows) out.insert(out.end(), m.begin() + static_cast<std::size_t>(r) * H, m.begin() + static_cast<std::size_t>(r + 1) * H);
  return out;
}
inline TopK take_topk(const TopK& t, const std::vector<int>& rows) {
  TopK out;
  out.num_tokens = static_cast<int>(rows.size());
  out.top_k = t.top_k;
  for (int r : rows)
    for (int s = 0; s < t.top_k; ++s) {
      out.ids.push_back(t.ids[static_cast<std::size_t>(r) * t.top_k + s]);
      out.weights.push_back(t.weights[static_cast<std::size_t>(r) * t.top_k + s]);
    }
  return out;
}
// At most `n` token indices spread over 0..T-1 (all of them when T <= n), always with the last.
inline std::vector<int> sample_rows(int T, int n) {
  std::vector<int> rows;
  if (T <= n) {
    for (int t = 0; t < T; ++t) rows.push_back(t);
    return rows;
  }
  for (int i = 0; i < n; ++i) rows.push_back(static_cast<int>(static_cast<long long>(i) * (T - 1) / (n - 1)));
  return rows;
}

}  // namespace mxmoe::test
