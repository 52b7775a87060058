// Bytes, FLOPs and experts hit of one bench row, and the figures derived from a time.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "mxmoe/bench.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {

void LayerShape::validate() const {
  const std::string who = "bench shape '" + name + "': ";
  if (group != 32 && group != 16)
    fail(ErrorCode::InvalidArgument, who + "group must be 32 (MXFP4) or 16 (NVFP4), got " + std::to_string(group));
  if (hidden <= 0 || hidden % 32 != 0)
    fail(ErrorCode::InvalidArgument, who + "hidden must be a positive multiple of 32, got " + std::to_string(hidden));
  if (inter <= 0 || inter % 32 != 0)
    fail(ErrorCode::InvalidArgument, who + "inter must be a positive multiple of 32, got " + std::to_string(inter));
  if (num_experts <= 0)
    fail(ErrorCode::InvalidArgument, who + "experts must be positive, got " + std::to_string(num_experts));
  if (top_k <= 0 || top_k > num_experts)
    fail(ErrorCode::InvalidArgument, who + "topk must be in 1.." + std::to_string(num_experts) + ", got " + std::to_string(top_k));
}

std::int64_t expert_weight_bytes(int hidden, int inter, int group) {
  if (hidden <= 0 || inter <= 0 || hidden % 32 != 0 || inter % 32 != 0)
    fail(ErrorCode::InvalidArgument, "expert_weight_bytes: H and I must be positive multiples of 32, got H=" +
                                         std::to_string(hidden) + " I=" + std::to_string(inter));
  if (group != 32 && group != 16)
    fail(ErrorCode::InvalidArgument, "expert_weight_bytes: the group must be 32 (MXFP4) or 16 (NVFP4), got " + std::to_string(group));
  const std::int64_t weights = 3ll * hidden * inter;
  return weights / 2 + weights / group;  // a nibble per weight, a scale byte per group
}

double expected_experts_hit(int num_experts, int top_k, std::int64_t num_tokens) {
  if (num_experts <= 0 || top_k <= 0 || top_k > num_experts || num_tokens < 0)
    fail(ErrorCode::InvalidArgument, "expected_experts_hit: need 1 <= k <= E and T >= 0, got E=" + std::to_string(num_experts) +
                                         " k=" + std::to_string(top_k) + " T=" + std::to_string(num_tokens));
  const double miss = 1.0 - static_cast<double>(top_k) / num_experts;  // one token misses a given expert
  return num_experts * (1.0 - std::pow(miss, static_cast<double>(num_tokens)));
}

int distinct_experts_hit(const TopK& topk, int num_experts) {
  std::vector<char> hit(static_cast<std::size_t>(std::max(num_experts, 0)), 0);
  int count = 0;
  for (std::size_t i = 0; i < topk.ids.size(); ++i) {
    const std::int32_t e = topk.ids[i];
    if (e == -1) continue;
    if (e < -1 || e >= num_experts)
      fail(ErrorCode::InvalidArgument, "topk ids: entry " + std::to_string(i) + " is " + std::to_string(e) +
                                           ", expected -1..." + std::to_string(num_experts - 1));
    if (!hit[static_cast<std::size_t>(e)]) {
      hit[static_cast<std::size_t>(e)] = 1;
      ++count;
    }
  }
  return count;
}

std::int64_t routed_pairs(const TopK& topk) {
  return static_cast<std::int64_t>(std::count_if(topk.ids.begin(), topk.ids.end(), [](std::int32_t e) { return e != -1; }));
}

Work row_work(const LayerShape& shape, std::int64_t num_tokens, int experts_hit, std::int64_t pairs) {
  shape.validate();
  if (num_tokens <= 0) fail(ErrorCode::InvalidArgument, "row_work: tokens must be positive, got " + std::to_string(num_tokens));
  if (experts_hit < 0 || experts_hit > shape.num_experts)
    fail(ErrorCode::InvalidArgument, "row_work: experts hit must be in 0.." + std::to_string(shape.num_experts) + ", got " +
                                         std::to_string(experts_hit));
  if (pairs < 0 || pairs > num_tokens * shape.top_k)
    fail(ErrorCode::InvalidArgument, "row_work: routed pairs must be in 0..T*k=" + std::to_string(num_tokens * shape.top_k) +
                                         ", got " + std::to_string(pairs));
  const std::int64_t H = shape.hidden, I = shape.inter, k = shape.top_k, T = num_tokens;
  Work w;
  w.tokens = T;
  w.experts_hit = experts_hit;
  w.routed_pairs = pairs;
  w.weight_bytes = experts_hit * expert_weight_bytes(shape.hidden, shape.inter, shape.group);
  const std::int64_t hidden_in = T * H * 2, out = T * H * 2, routing_in = T * k * 8;
  w.activation_bytes = hidden_in + out + routing_in;
  w.read_bytes = w.weight_bytes + hidden_in + routing_in;
  w.flops = 2.0 * static_cast<double>(pairs) * 3.0 * static_cast<double>(H) * static_cast<double>(I);
  return w;
}

namespace {
void expect_time(double us, const char* what) {
  if (!(us > 0.0) || !std::isfinite(us))
    fail(ErrorCode::InvalidArgument, std::string(what) + ": time must be a positive finite number of us, got " + std::to_string(us));
}
}  // namespace

double gb_per_s(double bytes, double us) {
  expect_time(us, "gb_per_s");
  return bytes / (us * 1e-6) / 1e9;
}

double tflop_per_s(double flops, double us) {
  expect_time(us, "tflop_per_s");
  return flops / (us * 1e-6) / 1e12;
}

double streaming_efficiency(double floor_us, double us) {
  expect_time(floor_us, "streaming_efficiency (read floor)");
  expect_time(us, "streaming_efficiency");
  return floor_us / us;
}

double speedup(double baseline_us, double us) {
  expect_time(baseline_us, "speedup (baseline)");
  expect_time(us, "speedup");
  return baseline_us / us;
}

double compute_floor_us(double flops, double gemm_tflop_per_s) {
  if (!(flops >= 0.0) || !std::isfinite(flops))
    fail(ErrorCode::InvalidArgument, "compute_floor_us: FLOPs must be a finite number >= 0, got " + std::to_string(flops));
  if (!(gemm_tflop_per_s > 0.0) || !std::isfinite(gemm_tflop_per_s))
    fail(ErrorCode::InvalidArgument, "compute_floor_us: the GEMM rate must be a positive finite TFLOP/s, got " +
                                         std::to_string(gemm_tflop_per_s));
  return flops / (gemm_tflop_per_s * 1e12) * 1e6;
}

double roofline_floor_us(double read_floor_us, double flops, double gemm_tflop_per_s) {
  expect_time(read_floor_us, "roofline_floor_us (read floor)");
  return std::max(read_floor_us, compute_floor_us(flops, gemm_tflop_per_s));
}

double roofline_efficiency(double read_floor_us, double flops, double gemm_tflop_per_s, double us) {
  expect_time(us, "roofline_efficiency");
  return roofline_floor_us(read_floor_us, flops, gemm_tflop_per_s) / us;
}

double median(std::vector<double> samples) {
  if (samples.empty()) fail(ErrorCode::InvalidArgument, "median of no samples");
  for (std::size_t i = 0; i < samples.size(); ++i)
    if (std::isnan(samples[i])) fail(ErrorCode::InvalidArgument, "median: sample " + std::to_string(i) + " is NaN");
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  return n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
}

}  // namespace mxmoe::bench
