#include <cfloat>

#include "mxmoe/device_buffer.hpp"
#include "kernels/routing.hpp"

namespace mxmoe::kernels {
namespace {

struct RoutingArgs {
  RoutingMode mode;
  int top_k, n_groups, topk_groups;
  bool renormalize;
  float scaling;
};

__device__ __forceinline__ float routing_score(RoutingMode mode, float logit) {
  switch (mode) {
    case RoutingMode::SigmoidGrouped: return 1.0f / (1.0f + expf(-logit));
    case RoutingMode::SqrtSoftplus: {
      // softplus(x) = log(1 + e^x), computed without overflow for large x.
      const float sp = logit > 20.0f ? logit : log1pf(expf(logit));
      return sqrtf(sp);
    }
    default: return logit;
  }
}

// Keeps the k best (value, id) in descending order; a later equal value never displaces an
// earlier one, so with ids visited in ascending order ties go to the lower id.
__device__ __forceinline__ void insert_top(float (&val)[kMaxRoutingTopK], int (&idx)[kMaxRoutingTopK], int k, float v, int id) {
  if (!(v > val[k - 1])) return;
  int pos = k - 1;
  while (pos > 0 && v > val[pos - 1]) {
    val[pos] = val[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  val[pos] = v;
  idx[pos] = id;
}

// One thread per token: E is at most a few hundred and k small, so a serial scan is cheap next
// to the GEMMs, and the code mirrors the oracle line for line.
__global__ void routing_kernel(const float* __restrict__ logits, const float* __restrict__ bias, int num_tokens,
                               int num_experts, RoutingArgs a, std::int32_t* __restrict__ ids, float* __restrict__ weights) {
  const int token = blockIdx.x * blockDim.x + threadIdx.x;
  if (token >= num_tokens) return;
  const float* row = logits + static_cast<std::int64_t>(token) * num_experts;
  float val[kMaxRoutingTopK];
  int idx[kMaxRoutingTopK];
  for (int j = 0; j < a.top_k; ++j) {
    val[j] = -FLT_MAX;
    idx[j] = -1;
  }
  const bool biased = a.mode == RoutingMode::SigmoidGrouped || a.mode == RoutingMode::SqrtSoftplus;
  auto choice_score = [&](int e) {
    const float s = routing_score(a.mode, row[e]);
    return biased && bias ? s + bias[e] : s;
  };

  // Groups (DeepSeek V3): rank groups by the sum of their two best choice scores.
  bool group_kept[kMaxRoutingGroups];
  const int group_size = num_experts / a.n_groups;
  if (a.n_groups > 1) {
    float gval[kMaxRoutingGroups];
    for (int gi = 0; gi < a.n_groups; ++gi) {
      float b1 = -FLT_MAX, b2 = -FLT_MAX;
      for (int e = gi * group_size; e < (gi + 1) * group_size; ++e) {
        const float s = choice_score(e);
        if (s > b1) {
          b2 = b1;
          b1 = s;
        } else if (s > b2) {
          b2 = s;
        }
      }
      gval[gi] = group_size > 1 ? b1 + b2 : b1;
      group_kept[gi] = false;
    }
    for (int r = 0; r < a.topk_groups; ++r) {
      int best = -1;
      for (int gi = 0; gi < a.n_groups; ++gi)
        if (!group_kept[gi] && (best < 0 || gval[gi] > gval[best])) best = gi;
      group_kept[best] = true;
    }
  }
  for (int e = 0; e < num_experts; ++e) {
    if (a.n_groups > 1 && !group_kept[e / group_size]) continue;
    insert_top(val, idx, a.top_k, choice_score(e), e);
  }

  float w[kMaxRoutingTopK];
  float sum = 0.0f;
  switch (a.mode) {
    case RoutingMode::Softmax: {
      float mx = -FLT_MAX;
      for (int e = 0; e < num_experts; ++e) mx = fmaxf(mx, row[e]);
      float denom = 0.0f;
      for (int e = 0; e < num_experts; ++e) denom += expf(row[e] - mx);
      for (int j = 0; j < a.top_k; ++j) {
        w[j] = expf(row[idx[j]] - mx) / denom;
        sum += w[j];
      }
      break;
    }
    case RoutingMode::SoftmaxTopK: {
      for (int j = 0; j < a.top_k; ++j) {
        w[j] = expf(row[idx[j]] - row[idx[0]]);
        sum += w[j];
      }
      for (int j = 0; j < a.top_k; ++j) w[j] /= sum;
      sum = 1.0f;
      break;
    }
    default:
      for (int j = 0; j < a.top_k; ++j) {
        w[j] = routing_score(a.mode, row[idx[j]]);
        sum += w[j];
      }
  }
  const bool renorm = a.renormalize && a.mode != RoutingMode::SoftmaxTopK;
  for (int j = 0; j < a.top_k; ++j) {
    const float wj = renorm ? w[j] / sum : w[j];
    ids[static_cast<std::int64_t>(token) * a.top_k + j] = idx[j];
    weights[static_cast<std::int64_t>(token) * a.top_k + j] = wj * a.scaling;
  }
}

}  // namespace

void launch_routing(const float* logits, const float* correction_bias, int num_tokens, int num_experts,
                    const RoutingConfig& config, std::int32_t* topk_ids, float* topk_weights, cudaStream_t stream) {
  config.validate(num_experts);
  if (config.top_k > kMaxRoutingTopK)
    fail(ErrorCode::Unsupported, "GPU routing supports top_k up to " + std::to_string(kMaxRoutingTopK) + ", got " + std::to_string(config.top_k));
  if (config.n_groups > kMaxRoutingGroups)
    fail(ErrorCode::Unsupported, "GPU routing supports up to " + std::to_string(kMaxRoutingGroups) + " expert groups, got " + std::to_string(config.n_groups));
  if (num_tokens <= 0) return;
  const RoutingArgs args{config.mode, config.top_k, config.n_groups, config.topk_groups, config.renormalize, config.routed_scaling};
  constexpr int kThreads = 128;
  routing_kernel<<<(num_tokens + kThreads - 1) / kThreads, kThreads, 0, stream>>>(logits, correction_bias, num_tokens,
                                                                               num_experts, args, topk_ids, topk_weights);
  check_launch("routing");
}

}  // namespace mxmoe::kernels
