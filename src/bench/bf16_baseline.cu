// The bf16 baseline: MXFP4 weights dequantised once to bf16, then per expert two cuBLAS GEMMs over
// the tokens routed to it, with gather, activation and weighted combine kernels around them.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bench/device_bench.hpp"
#include "bench/cuda_status.hpp"
#include "core/activation.hpp"
#include "formats/bf16.hpp"
#include "formats/mxfp4.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {
namespace {

constexpr const char* kComponent = "bf16 baseline";
void baseline_check(cudaError_t err, const std::string& what) { check(err, what, kComponent); }
void baseline_check_cublas(cublasStatus_t status, const std::string& what) { check_cublas(status, what, kComponent); }

// rows x k MXFP4 (packed [rows, k/2], scales [rows, k/32]) -> bf16 [rows, k]; exact.
__global__ void dequantize_kernel(const std::uint8_t* packed, const std::uint8_t* scales, std::uint16_t* out,
                                  std::int64_t rows, std::int64_t k) {
  const std::int64_t bytes = rows * k / 2;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < bytes;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / (k / 2), col = 2 * (i % (k / 2));
    const std::uint8_t b = packed[i], s = scales[row * (k / 32) + col / 32];
    out[row * k + col] = formats::float_to_bf16(formats::mxfp4_dequantize(b & 0xf, s));
    out[row * k + col + 1] = formats::float_to_bf16(formats::mxfp4_dequantize(b >> 4, s));
  }
}

// x_sorted[i] = hidden[token[i]], 16 bytes per thread (H is a multiple of 32).
__global__ void gather_kernel(const uint4* hidden, const std::int32_t* token, uint4* x_sorted, int chunks) {
  const int i = blockIdx.x;
  const uint4* src = hidden + static_cast<std::int64_t>(token[i]) * chunks;
  uint4* dst = x_sorted + static_cast<std::int64_t>(i) * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) dst[c] = src[c];
}

// a[i, j] = act(y1[i, j] + b[e, j], y1[i, I + j] + b[e, I + j]) for sorted row i of expert e.
__global__ void activation_kernel(const std::uint16_t* y1, const std::int32_t* expert, const float* bias13,
                                  std::uint16_t* a, int inter, ActivationKind kind, float limit, float alpha) {
  const std::int64_t i = blockIdx.x;
  const std::uint16_t* row = y1 + i * 2 * inter;
  const float* b = bias13 ? bias13 + static_cast<std::int64_t>(expert[i]) * 2 * inter : nullptr;
  for (int j = threadIdx.x; j < inter; j += blockDim.x) {
    float g = formats::bf16_to_float(row[j]), u = formats::bf16_to_float(row[inter + j]);
    if (b) {
      g += b[j];
      u += b[inter + j];
    }
    a[i * inter + j] = formats::float_to_bf16(activate(kind, g, u, limit, alpha));
  }
}

// out[t, h] = sum_s w[t, s] * (y2[pos[t, s], h] + b2[e, h]) over slots with pos >= 0, fp32 sum.
__global__ void combine_kernel(const std::uint16_t* y2, const std::int32_t* pos, const std::int32_t* ids,
                               const float* weights, const float* bias2, std::uint16_t* out, int hidden, int top_k) {
  const std::int64_t t = blockIdx.x;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < top_k; ++s) {
      const int p = pos[t * top_k + s];
      if (p < 0) continue;
      float v = formats::bf16_to_float(y2[static_cast<std::int64_t>(p) * hidden + h]);
      if (bias2) v += bias2[static_cast<std::int64_t>(ids[t * top_k + s]) * hidden + h];
      acc += weights[t * top_k + s] * v;
    }
    out[t * hidden + h] = formats::float_to_bf16(acc);
  }
}

}  // namespace

struct Bf16Baseline::Impl {
  int E = 0, H = 0, I = 0, top_k = 0, max_tokens = 0;
  ActivationConfig activation;
  int capacity = 0;                   // experts resident in bf16 at once
  std::vector<int> slot_of;           // expert -> slot, or -1
  std::vector<int> expert_in;         // slot -> expert, or -1
  DeviceBuffer w13_packed, w13_scale, w2_packed, w2_scale;  // freed once every expert is resident
  DeviceBuffer w13_bf16, w2_bf16, bias13, bias2;
  DeviceBuffer token, expert, pos, ids, weights;  // routing tables of the current row
  DeviceBuffer x_sorted, y1, act, y2, workspace;
  cublasHandle_t handle = nullptr;
  // Current row: tokens, and per group (expert with tokens) its slot, first sorted row and count.
  int tokens = 0;
  std::vector<int> group_slot, group_begin, group_count;

  void dequantize_expert(int e, int slot) {
    const std::int64_t rows13 = 2ll * I, rows2 = H;
    dequantize_kernel<<<1024, 256>>>(w13_packed.as<std::uint8_t>() + e * rows13 * H / 2,
                                     w13_scale.as<std::uint8_t>() + e * rows13 * H / 32,
                                     w13_bf16.as<std::uint16_t>() + slot * rows13 * H, rows13, H);
    dequantize_kernel<<<1024, 256>>>(w2_packed.as<std::uint8_t>() + e * rows2 * I / 2,
                                     w2_scale.as<std::uint8_t>() + e * rows2 * I / 32,
                                     w2_bf16.as<std::uint16_t>() + slot * rows2 * I, rows2, I);
    baseline_check(cudaGetLastError(), "dequantize launch");
    slot_of[e] = slot;
    expert_in[slot] = e;
  }
};

Bf16Baseline::Bf16Baseline(const CanonicalMoeWeights& w, const ActivationConfig& activation, int top_k, int max_tokens,
                           std::size_t memory_budget)
    : impl_(std::make_unique<Impl>()) {
  w.validate();
  activation.validate();
  if (top_k < 1 || top_k > w.num_experts || max_tokens < 1)
    fail(ErrorCode::InvalidArgument, "bf16 baseline: need 1 <= top_k <= E and max_tokens >= 1, got top_k=" +
                                         std::to_string(top_k) + " max_tokens=" + std::to_string(max_tokens));
  Impl& m = *impl_;
  m.E = w.num_experts;
  m.H = w.hidden;
  m.I = w.inter;
  m.top_k = top_k;
  m.max_tokens = max_tokens;
  m.activation = activation;
  const std::size_t pairs = static_cast<std::size_t>(max_tokens) * top_k, H = m.H, I = m.I;
  const std::size_t work_bytes = pairs * (H + 2 * I + I + H) * 2 + pairs * 20 + (64u << 20);
  // The packed copy stays on the GPU while experts are dequantised (and for good when not all fit).
  const std::size_t packed_bytes = w.w13.nbytes() + w.w13_scale.nbytes() + w.w2.nbytes() + w.w2_scale.nbytes() +
                                   (w.w13_bias ? w.w13_bias->nbytes() : 0) + (w.w2_bias ? w.w2_bias->nbytes() : 0);
  const std::size_t fixed = work_bytes + packed_bytes, expert_bf16 = 3 * H * I * 2;
  if (memory_budget < fixed + static_cast<std::size_t>(top_k) * expert_bf16)
    fail(ErrorCode::Unsupported, "bf16 baseline: needs at least " + std::to_string((fixed + top_k * expert_bf16) >> 20) +
                                     " MiB of GPU memory, " + std::to_string(memory_budget >> 20) + " MiB available");
  m.capacity = static_cast<int>(std::min<std::size_t>(m.E, (memory_budget - fixed) / expert_bf16));

  m.x_sorted = DeviceBuffer(pairs * H * 2, "bf16 baseline gathered activations");
  m.y1 = DeviceBuffer(pairs * 2 * I * 2, "bf16 baseline GEMM1 output");
  m.act = DeviceBuffer(pairs * I * 2, "bf16 baseline activations");
  m.y2 = DeviceBuffer(pairs * H * 2, "bf16 baseline GEMM2 output");
  m.token = DeviceBuffer(pairs * 4, "bf16 baseline token table");
  m.expert = DeviceBuffer(pairs * 4, "bf16 baseline expert table");
  m.pos = DeviceBuffer(pairs * 4, "bf16 baseline position table");
  m.ids = DeviceBuffer(pairs * 4, "bf16 baseline ids");
  m.weights = DeviceBuffer(pairs * 4, "bf16 baseline weights");
  m.workspace = DeviceBuffer(32u << 20, "cuBLAS workspace");
  m.w13_bf16 = DeviceBuffer(m.capacity * 2 * I * H * 2, "bf16 w13");
  m.w2_bf16 = DeviceBuffer(m.capacity * H * I * 2, "bf16 w2");
  m.w13_packed = DeviceBuffer(w.w13.nbytes(), "packed w13");
  m.w13_packed.upload(w.w13.data(), w.w13.nbytes());
  m.w13_scale = DeviceBuffer(w.w13_scale.nbytes(), "w13 scales");
  m.w13_scale.upload(w.w13_scale.data(), w.w13_scale.nbytes());
  m.w2_packed = DeviceBuffer(w.w2.nbytes(), "packed w2");
  m.w2_packed.upload(w.w2.data(), w.w2.nbytes());
  m.w2_scale = DeviceBuffer(w.w2_scale.nbytes(), "w2 scales");
  m.w2_scale.upload(w.w2_scale.data(), w.w2_scale.nbytes());
  if (w.w13_bias) {
    m.bias13 = DeviceBuffer(w.w13_bias->nbytes(), "w13 bias");
    m.bias13.upload(w.w13_bias->data(), w.w13_bias->nbytes());
  }
  if (w.w2_bias) {
    m.bias2 = DeviceBuffer(w.w2_bias->nbytes(), "w2 bias");
    m.bias2.upload(w.w2_bias->data(), w.w2_bias->nbytes());
  }
  m.slot_of.assign(m.E, -1);
  m.expert_in.assign(m.capacity, -1);
  if (m.capacity == m.E) {  // everything fits: dequantise once, drop the packed copy
    for (int e = 0; e < m.E; ++e) m.dequantize_expert(e, e);
    baseline_check(cudaDeviceSynchronize(), "dequantising all experts");
    m.w13_packed = DeviceBuffer();
    m.w13_scale = DeviceBuffer();
    m.w2_packed = DeviceBuffer();
    m.w2_scale = DeviceBuffer();
  }
  baseline_check_cublas(cublasCreate(&m.handle), "cublasCreate");
  baseline_check_cublas(cublasSetWorkspace(m.handle, m.workspace.as(), m.workspace.bytes()), "cublasSetWorkspace");
}

Bf16Baseline::~Bf16Baseline() {
  if (impl_->handle) cublasDestroy(impl_->handle);
}

int Bf16Baseline::resident_capacity() const { return impl_->capacity; }

bool Bf16Baseline::set_routing(const TopK& topk, std::string* why_not) {
  Impl& m = *impl_;
  if (topk.top_k != m.top_k || topk.num_tokens < 1 || topk.num_tokens > m.max_tokens ||
      topk.ids.size() != static_cast<std::size_t>(topk.num_tokens) * topk.top_k || topk.weights.size() != topk.ids.size())
    fail(ErrorCode::Shape, "bf16 baseline: routing of T=" + std::to_string(topk.num_tokens) + " k=" + std::to_string(topk.top_k) +
                               " does not match the baseline (k=" + std::to_string(m.top_k) +
                               ", T <= " + std::to_string(m.max_tokens) + ") or its own sizes");
  const int hit = distinct_experts_hit(topk, m.E);  // also validates every id
  if (hit > m.capacity) {
    *why_not = "bf16 weights of " + std::to_string(hit) + " experts hit do not fit in GPU memory (room for " +
               std::to_string(m.capacity) + ")";
    return false;
  }
  // Counting sort of the (token, slot) pairs by expert.
  const int T = topk.num_tokens, k = topk.top_k;
  std::vector<int> count(m.E, 0);
  for (std::int32_t e : topk.ids)
    if (e >= 0) ++count[e];
  std::vector<int> begin(m.E + 1, 0);
  for (int e = 0; e < m.E; ++e) begin[e + 1] = begin[e] + count[e];
  std::vector<std::int32_t> token(begin[m.E]), expert(begin[m.E]), pos(topk.ids.size(), -1);
  std::vector<int> fill(begin.begin(), begin.end() - 1);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < k; ++s) {
      const int e = topk.ids[static_cast<std::size_t>(t) * k + s];
      if (e < 0) continue;
      const int p = fill[e]++;
      token[p] = t;
      expert[p] = e;
      pos[static_cast<std::size_t>(t) * k + s] = p;
    }
  // Make the experts hit resident, evicting experts this row does not need.
  int next_free = 0;
  for (int e = 0; e < m.E; ++e) {
    if (count[e] == 0 || m.slot_of[e] >= 0) continue;
    while (m.expert_in[next_free] >= 0 && count[m.expert_in[next_free]] > 0) ++next_free;
    if (m.expert_in[next_free] >= 0) m.slot_of[m.expert_in[next_free]] = -1;
    m.dequantize_expert(e, next_free);
  }
  m.group_slot.clear();
  m.group_begin.clear();
  m.group_count.clear();
  for (int e = 0; e < m.E; ++e)
    if (count[e] > 0) {
      m.group_slot.push_back(m.slot_of[e]);
      m.group_begin.push_back(begin[e]);
      m.group_count.push_back(count[e]);
    }
  m.tokens = T;
  m.token.upload(token.data(), token.size() * 4);
  m.expert.upload(expert.data(), expert.size() * 4);
  m.pos.upload(pos.data(), pos.size() * 4);
  m.ids.upload(topk.ids.data(), topk.ids.size() * 4);
  m.weights.upload(topk.weights.data(), topk.weights.size() * 4);
  baseline_check(cudaDeviceSynchronize(), "preparing the baseline's routing");
  return true;
}

void Bf16Baseline::forward(const void* hidden, void* out, cudaStream_t stream) const {
  const Impl& m = *impl_;
  if (m.tokens == 0) fail(ErrorCode::InvalidArgument, "bf16 baseline: forward before set_routing");
  const std::int64_t H = m.H, I = m.I;
  const int pairs = m.group_begin.empty() ? 0 : m.group_begin.back() + m.group_count.back();
  const float alpha = 1.0f, beta = 0.0f;
  baseline_check_cublas(cublasSetStream(m.handle, stream), "cublasSetStream");
  if (pairs > 0) gather_kernel<<<pairs, 128, 0, stream>>>(static_cast<const uint4*>(hidden), m.token.as<std::int32_t>(),
                                                         m.x_sorted.as<uint4>(), static_cast<int>(H / 8));
  // Row-major [n, K] activations times row-major [N, K] weights, seen by column-major cuBLAS as
  // C^T (N x n) = W (op T of the K x N column-major view) * X^T.
  for (std::size_t g = 0; g < m.group_slot.size(); ++g) {
    const std::int64_t b = m.group_begin[g], slot = m.group_slot[g];
    baseline_check_cublas(cublasGemmEx(m.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(2 * I), m.group_count[g], static_cast<int>(H),
                              &alpha, m.w13_bf16.as<std::uint16_t>() + slot * 2 * I * H, CUDA_R_16BF, static_cast<int>(H),
                              m.x_sorted.as<std::uint16_t>() + b * H, CUDA_R_16BF, static_cast<int>(H), &beta,
                              m.y1.as<std::uint16_t>() + b * 2 * I, CUDA_R_16BF, static_cast<int>(2 * I), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 "GEMM1 (gate/up)");
  }
  if (pairs > 0)
    activation_kernel<<<pairs, 256, 0, stream>>>(m.y1.as<std::uint16_t>(), m.expert.as<std::int32_t>(),
                                                 m.bias13.as<float>(), m.act.as<std::uint16_t>(), m.I,
                                                 m.activation.kind, m.activation.limit, m.activation.alpha);
  for (std::size_t g = 0; g < m.group_slot.size(); ++g) {
    const std::int64_t b = m.group_begin[g], slot = m.group_slot[g];
    baseline_check_cublas(cublasGemmEx(m.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(H), m.group_count[g], static_cast<int>(I),
                              &alpha, m.w2_bf16.as<std::uint16_t>() + slot * H * I, CUDA_R_16BF, static_cast<int>(I),
                              m.act.as<std::uint16_t>() + b * I, CUDA_R_16BF, static_cast<int>(I), &beta,
                              m.y2.as<std::uint16_t>() + b * H, CUDA_R_16BF, static_cast<int>(H), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 "GEMM2 (down)");
  }
  combine_kernel<<<m.tokens, 256, 0, stream>>>(m.y2.as<std::uint16_t>(), m.pos.as<std::int32_t>(), m.ids.as<std::int32_t>(),
                                               m.weights.as<float>(), m.bias2.as<float>(), static_cast<std::uint16_t*>(out),
                                               m.H, m.top_k);
  baseline_check(cudaGetLastError(), "baseline kernel launch");
}

}  // namespace mxmoe::bench
