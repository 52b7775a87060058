// `mxmoe bench --sweep-shapes N`: the random shapes (deterministic in the seed) and the sweep's
// lines, summary, JSON and CSV. CPU only; the measuring is run_bench's, once per shape.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/random.hpp"
#include "mxmoe/bench.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {
namespace {

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

void check_ranges(int count, int group, const SweepRanges& r) {
  auto bad = [](const std::string& what) { fail(ErrorCode::InvalidArgument, "--sweep-shapes: " + what); };
  if (count < 1) bad("the number of shapes must be at least 1, got " + std::to_string(count));
  if (group != 32 && group != 16) bad("the group must be 32 or 16, got " + std::to_string(group));
  if (r.min_experts < 1 || r.max_experts < r.min_experts)
    bad("experts range " + std::to_string(r.min_experts) + ".." + std::to_string(r.max_experts) + " is empty");
  if (r.min_dim < 32 || r.min_dim % 32 || r.max_dim % 32 || r.max_dim < r.min_dim)
    bad("H/I range " + std::to_string(r.min_dim) + ".." + std::to_string(r.max_dim) + " needs multiples of 32, min <= max");
  if (r.max_top_k < 1) bad("max top-k must be at least 1, got " + std::to_string(r.max_top_k));
  const std::int64_t smallest = static_cast<std::int64_t>(r.min_experts) * expert_weight_bytes(r.min_dim, r.min_dim, group);
  if (r.max_layer_bytes < smallest)
    bad("the layer-size cap " + std::to_string(r.max_layer_bytes) + " B is below the smallest layer of the ranges (" +
        std::to_string(smallest) + " B)");
}

}  // namespace

std::vector<SweepShape> random_shapes(int count, std::uint64_t seed, int group, const SweepRanges& ranges) {
  check_ranges(count, group, ranges);
  SplitMix64 rng(stream_seed(seed, 0x5ea9e5ull));
  // An integer log-uniform in lo..hi: floor of exp(uniform(ln lo, ln(hi + 1))), clamped for rounding.
  auto log_uniform_int = [&](int lo, int hi) {
    const double l = std::log(static_cast<double>(lo)), h = std::log(static_cast<double>(hi) + 1.0);
    const int v = static_cast<int>(std::floor(std::exp(l + rng.uniform() * (h - l))));
    return std::clamp(v, lo, hi);
  };
  std::vector<SweepShape> shapes;
  for (int i = 0; i < count; ++i) {
    SweepShape s;
    for (int attempt = 0;; ++attempt) {
      if (attempt == 10000)
        fail(ErrorCode::InvalidArgument, "--sweep-shapes: no shape under the layer-size cap after 10000 draws");
      const int E = log_uniform_int(ranges.min_experts, ranges.max_experts);
      const int H = 32 * log_uniform_int(ranges.min_dim / 32, ranges.max_dim / 32);
      const int I = 32 * log_uniform_int(ranges.min_dim / 32, ranges.max_dim / 32);
      const int k = 1 + static_cast<int>(rng.next() % static_cast<std::uint64_t>(std::min(ranges.max_top_k, E)));
      const int act = static_cast<int>(rng.next() % 3);
      if (static_cast<std::int64_t>(E) * expert_weight_bytes(H, I, group) > ranges.max_layer_bytes) continue;
      char name[96];
      std::snprintf(name, sizeof name, "sweep%02d-e%d-h%d-i%d-k%d", i + 1, E, H, I, k);
      s.shape = {name, H, I, E, k, group};
      s.activation = act == 0   ? ActivationConfig::silu_mul()
                     : act == 1 ? ActivationConfig::clamped_silu_mul(10.0f)
                                : ActivationConfig::gpt_oss();
      s.biases = act == 2;
      break;
    }
    s.shape.validate();
    shapes.push_back(s);
  }
  return shapes;
}

std::string format_sweep_line(const SweepShape& shape, std::size_t index, std::size_t count, const Report& report,
                              const Row& row) {
  char head[192];
  const int digits = static_cast<int>(std::to_string(count).size());
  std::snprintf(head, sizeof head, "[%*zu/%zu] %-30s %-12s T=%-5lld hit %4lld", digits, index + 1, count,
                shape.shape.name.c_str(), activation_kind_name(shape.activation.kind), static_cast<long long>(row.work.tokens),
                static_cast<long long>(row.work.experts_hit));
  std::string line = head;
  line += "  floor " + (row.read_floor_us > 0 ? fmt("%8.1f", row.read_floor_us) : std::string("       -")) + " us";
  const auto it = row.path_us.find("mxmoe");
  if (it == row.path_us.end()) {
    const auto note = row.path_note.find("mxmoe");
    return line + "  mxmoe FAILED: " + (note != row.path_note.end() ? note->second : std::string("no time recorded"));
  }
  const double us = it->second;
  line += "  mxmoe " + fmt("%8.1f", us) + " us";
  line += "  eff " + (row.read_floor_us > 0 ? fmt("%3.0f%%", 100.0 * streaming_efficiency(row.read_floor_us, us)) : "   -");
  line += "  roofline " + (row.read_floor_us > 0 && report.limits.gemm_tflop_per_s > 0
                               ? fmt("%3.0f%%", 100.0 * roofline_efficiency(row.read_floor_us, row.work.flops,
                                                                            report.limits.gemm_tflop_per_s, us))
                               : std::string("   -"));
  return line;
}

SweepSummary summarize_sweep(const std::vector<Report>& reports, double threshold) {
  SweepSummary s;
  s.threshold = threshold;
  std::vector<double> streaming, roofline;
  s.min_streaming = s.min_roofline = 0.0;
  for (const Report& rep : reports)
    for (const Row& row : rep.rows) {
      ++s.rows;
      const auto it = row.path_us.find("mxmoe");
      if (it == row.path_us.end()) {
        ++s.failed;
        continue;
      }
      ++s.timed;
      if (!(row.read_floor_us > 0)) continue;
      const std::string at = rep.shape.name + " T=" + std::to_string(row.work.tokens);
      const double eff = streaming_efficiency(row.read_floor_us, it->second);
      if (streaming.empty() || eff < s.min_streaming) {
        s.min_streaming = eff;
        s.min_streaming_at = at;
      }
      streaming.push_back(eff);
      if (eff < threshold) ++s.below_threshold;
      if (rep.limits.gemm_tflop_per_s > 0) {
        const double roof = roofline_efficiency(row.read_floor_us, row.work.flops, rep.limits.gemm_tflop_per_s, it->second);
        if (roofline.empty() || roof < s.min_roofline) {
          s.min_roofline = roof;
          s.min_roofline_at = at;
        }
        roofline.push_back(roof);
      }
    }
  if (!streaming.empty()) s.median_streaming = median(streaming);
  if (!roofline.empty()) s.median_roofline = median(roofline);
  return s;
}

std::string format_sweep_summary(const SweepSummary& s) {
  std::string out = "sweep: " + std::to_string(s.rows) + " (shape, T) rows, " + std::to_string(s.timed) + " timed, " +
                    std::to_string(s.failed) + " failed";
  if (s.min_streaming_at.empty()) return out + "; no efficiency to summarise (no row has both a read floor and a mxmoe time)\n";
  out += "\n  streaming efficiency (read floor / time): min " + fmt("%.0f%%", 100 * s.min_streaming) + " (" +
         s.min_streaming_at + "), median " + fmt("%.0f%%", 100 * s.median_streaming) + "; " +
         std::to_string(s.below_threshold) + " rows below " + fmt("%.0f%%", 100 * s.threshold) + "\n";
  if (!s.min_roofline_at.empty())
    out += "  roofline efficiency (max(read floor, FLOPs / GEMM rate) / time): min " + fmt("%.0f%%", 100 * s.min_roofline) +
           " (" + s.min_roofline_at + "), median " + fmt("%.0f%%", 100 * s.median_roofline) + "\n";
  if (s.failed) out += "  " + std::to_string(s.failed) + " rows have no mxmoe time: their lines above say why\n";
  return out;
}

nlohmann::json sweep_to_json(const std::vector<SweepShape>& shapes, const std::vector<Report>& reports,
                             const SweepSummary& summary) {
  if (shapes.size() != reports.size())
    fail(ErrorCode::InvalidArgument, "sweep_to_json: " + std::to_string(shapes.size()) + " shapes but " +
                                         std::to_string(reports.size()) + " reports");
  nlohmann::json j;
  j["shapes"] = nlohmann::json::array();
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    nlohmann::json r = to_json(reports[i]);
    r["activation"] = {{"kind", activation_kind_name(shapes[i].activation.kind)},
                       {"limit", shapes[i].activation.limit},
                       {"alpha", shapes[i].activation.alpha}};
    r["biases"] = shapes[i].biases;
    j["shapes"].push_back(r);
  }
  nlohmann::json s = {{"rows", summary.rows},
                      {"timed", summary.timed},
                      {"failed", summary.failed},
                      {"threshold", summary.threshold},
                      {"below_threshold", summary.below_threshold}};
  if (!summary.min_streaming_at.empty()) {
    s["streaming_efficiency"] = {{"min", summary.min_streaming}, {"min_at", summary.min_streaming_at},
                                 {"median", summary.median_streaming}};
  }
  if (!summary.min_roofline_at.empty()) {
    s["roofline_efficiency"] = {{"min", summary.min_roofline}, {"min_at", summary.min_roofline_at},
                                {"median", summary.median_roofline}};
  }
  j["summary"] = s;
  return j;
}

std::string sweep_to_csv(const std::vector<Report>& reports) {
  if (reports.empty()) return to_csv(Report{});  // the header alone
  std::string out;
  for (std::size_t i = 0; i < reports.size(); ++i) {
    const std::string csv = to_csv(reports[i]);
    out += i == 0 ? csv : csv.substr(csv.find('\n') + 1);
  }
  return out;
}

}  // namespace mxmoe::bench
