// The CPU side of `mxmoe bench`: work accounting (bytes, FLOPs, experts hit), the figures derived
// from a timing (GB/s, streaming efficiency, TFLOP/s, speed-ups), bench routing, and the report
// as a table, JSON and CSV. Nothing here touches a GPU, so all of it is unit-tested on the CPU.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mxmoe/reference.hpp"

namespace mxmoe::bench {

// The routed-experts part of one MoE layer.
struct LayerShape {
  std::string name;
  int hidden = 0, inter = 0, num_experts = 0, top_k = 0;
  int group = 32;         // quantisation group: 32 MXFP4 (E8M0), 16 NVFP4 (UE4M3 + global scales)
  void validate() const;  // H, I positive multiples of 32; 1 <= top_k <= E; group 32 or 16
};

// Bytes of one expert's weights (w1, w3, w2 with their scales): 3*H*I/2 + 3*H*I/group, i.e. 4.25
// bits per weight for MXFP4 (4-bit element + one 8-bit scale per 32), 4.5 for NVFP4 (per 16; its
// per-matrix fp32 global scales are not counted).
std::int64_t expert_weight_bytes(int hidden, int inter, int group = 32);

// Expected distinct experts hit when T tokens each pick k of E experts uniformly at random:
// E * (1 - (1 - k/E)^T).
double expected_experts_hit(int num_experts, int top_k, std::int64_t num_tokens);

// Distinct expert ids in `topk` (ids of -1 are skipped); throws on an id outside -1..E-1.
int distinct_experts_hit(const TopK& topk, int num_experts);
// (token, expert) pairs with an id other than -1.
std::int64_t routed_pairs(const TopK& topk);

// What one forward over T tokens must move and compute.
//   weight_bytes     = experts_hit * expert_weight_bytes (biases not counted)
//   activation_bytes = hidden in (T*H*2) + output out (T*H*2) + ids and weights in (T*k*8)
//   read_bytes       = weight_bytes + T*H*2 + T*k*8: what the forward must read at least; the
//                      read floor is measured for exactly this many bytes
//   flops            = 2 * routed_pairs * 3*H*I: one multiply-add counts 2, over both GEMMs
//                      (gate+up: H x 2I, down: I x H); activation and combine not counted
struct Work {
  std::int64_t tokens = 0, experts_hit = 0, routed_pairs = 0;
  std::int64_t weight_bytes = 0, activation_bytes = 0, read_bytes = 0;
  double flops = 0.0;
};
Work row_work(const LayerShape& shape, std::int64_t num_tokens, int experts_hit, std::int64_t routed_pairs);

// Figures from a time in microseconds (all throw on a non-positive or NaN time).
double gb_per_s(double bytes, double us);            // 1 GB = 1e9 bytes
double tflop_per_s(double flops, double us);         // 1 TFLOP = 1e12
double streaming_efficiency(double floor_us, double us);  // floor / time: 1.0 = at the read floor
double speedup(double baseline_us, double us);       // > 1: `us` is faster than the baseline

// The roofline: the compute floor is the time the row's FLOPs take at the measured bf16 GEMM rate,
// flops / rate; the roofline floor is the larger of it and the read floor; roofline efficiency =
// roofline floor / time (1.0 = at whichever limit binds). Skewed and uniform rows compare on it:
// a row that is compute-bound is judged against the GEMM rate, not against reading its bytes.
// All throw on a non-positive or NaN time or rate, or negative FLOPs.
double compute_floor_us(double flops, double gemm_tflop_per_s);
double roofline_floor_us(double read_floor_us, double flops, double gemm_tflop_per_s);
double roofline_efficiency(double read_floor_us, double flops, double gemm_tflop_per_s, double us);

// Median of the samples (mean of the middle two for an even count); throws on empty or NaN.
double median(std::vector<double> samples);

// Token counts: the default sweep and a parsed `--tokens 1,4,16` list (each 1..max, no repeats).
std::vector<int> default_token_sweep();
std::vector<int> parse_token_list(const std::string& text, int max_tokens);

// Bench routing: one random logit per (token, expert), normal(0, 1), plus, when skew > 0, the bias
// -skew * ln(1 + rank) of expert `rank` (a Zipf-like preference for low ids); top-k by logit,
// weights = softmax over the k chosen logits. Deterministic in the seed.
TopK bench_routing(int num_tokens, int num_experts, int top_k, double skew, std::uint64_t seed);

// One measured row. Times are medians in microseconds, keyed by path name ("mxmoe",
// "cublas_bf16", "torch_bf16"); a path that was not run or failed is absent.
struct Row {
  Work work;
  double expected_hit = 0.0;
  double read_floor_us = 0.0;
  std::map<std::string, double> path_us;
  std::map<std::string, std::string> path_note;  // why a path is absent, or a caveat
  double rel_err_vs_bf16 = -1.0;                 // ||mxmoe - cublas_bf16||_F / ||cublas_bf16||_F; -1: not checked
  std::string mxmoe_gemm;                        // the GEMM plan mxmoe ran (MoeLayer::gemm_plan_for); empty: none
};

struct Limits {
  // Device-to-device copy of copy_bytes by a copy kernel of the bench's own (16-byte loads and
  // stores, 256-thread CTAs enough to cover the buffer in one pass), graph-captured and replayed like every
  // path: (read + write bytes) / time = 2 * copy_bytes / time.
  double copy_gb_per_s = 0.0;
  std::int64_t copy_bytes = 0;
  double gemm_tflop_per_s = 0.0;   // cuBLAS bf16 GEMM n x n x n, fp32 accumulate
  int gemm_n = 0;
  // The same copy as one graph-captured cudaMemcpyAsync (what copy_gb_per_s measured before the copy
  // kernel: ~2700 GB/s on an H200 against ~4250): kept so that older records stay comparable; 0:
  // not measured.
  double memcpy_gb_per_s = 0.0;
};

struct Report {
  LayerShape shape;
  std::map<std::string, std::string> meta;  // device, commit, seed, skew, reps, ...
  Limits limits;
  double prepare_ms = -1.0;       // mxmoe's one-time weight preparation of the whole layer (GPU time)
  double prepare_wall_ms = -1.0;  // the whole MoeLayer constructor, upload included (host clock)
  std::vector<Row> rows;
};

// Order of paths in every output.
const std::vector<std::string>& path_names();

nlohmann::json to_json(const Report& report);
std::string to_csv(const Report& report);
std::string format_table(const Report& report);

// Merges the torch script's result ({"rows": [{"tokens": T, "us": t} ...]}) into the rows with
// the same token count as path "torch_bf16"; throws on a malformed document or unknown T.
void merge_torch_result(Report& report, const nlohmann::json& torch_result);

// The routing the bench used, for the torch script: {"shape": ..., "rows": [{"tokens", "ids"}]}.
// How the copy limit is measured, in words (the table's limits line, the JSON and --help say it).
const char* copy_method();

// `mxmoe bench --sweep-shapes N`: N random layer shapes, drawn deterministically from the seed:
//   E        log-uniform in 8..512 (rounded)
//   H, I     log-uniform in 256..8192, rounded to a multiple of 32 (so 256..8192 exactly)
//   top-k    uniform in 1..min(8, E)
//   activation  uniform among silu, clamped-silu (limit 10, as DeepSeek-V4) and gpt-oss (alpha 1.702,
//            limit 7, with biases, as gpt-oss); the others have no biases
// A draw whose whole layer (E x expert_weight_bytes) exceeds max_layer_bytes is drawn again, so the
// synthetic weights fit in host and GPU memory; names are "sweep<i>-e<E>-h<H>-i<I>-k<k>".
struct SweepShape {
  LayerShape shape;
  ActivationConfig activation;
  bool biases = false;
};
struct SweepRanges {
  int min_experts = 8, max_experts = 512;
  int min_dim = 256, max_dim = 8192;  // H and I, multiples of 32
  int max_top_k = 8;
  std::int64_t max_layer_bytes = std::int64_t(16) << 30;
};
std::vector<SweepShape> random_shapes(int count, std::uint64_t seed, int group = 32, const SweepRanges& ranges = {});

// One line of the sweep per (shape, T): the shape, experts hit, read floor, mxmoe's time, streaming
// and roofline efficiency, or why mxmoe has no time.
std::string format_sweep_line(const SweepShape& shape, std::size_t index, std::size_t count, const Report& report,
                              const Row& row);

// Over every (shape, T) of a sweep: rows timed and failed, streaming and roofline efficiency (min
// with its shape and T, median) and rows below `threshold` streaming efficiency.
struct SweepSummary {
  std::size_t rows = 0, timed = 0, failed = 0, below_threshold = 0;
  double threshold = 0.65;
  double min_streaming = 0.0, median_streaming = 0.0, min_roofline = 0.0, median_roofline = 0.0;
  std::string min_streaming_at, min_roofline_at;  // "<shape name> T=<T>"
};
SweepSummary summarize_sweep(const std::vector<Report>& reports, double threshold = 0.65);
std::string format_sweep_summary(const SweepSummary& summary);
// {"shapes": [to_json of each report with its activation], "summary": {...}}; the CSV is to_csv's
// columns with one header and every shape's rows.
nlohmann::json sweep_to_json(const std::vector<SweepShape>& shapes, const std::vector<Report>& reports,
                             const SweepSummary& summary);
std::string sweep_to_csv(const std::vector<Report>& reports);

nlohmann::json routing_document(const LayerShape& shape, const std::vector<TopK>& routings, std::uint64_t seed,
                                double skew);

}  // namespace mxmoe::bench
