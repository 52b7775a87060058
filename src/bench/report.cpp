// The bench report as JSON, CSV and a fixed-width table; merging the torch script's timings.
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>

#include "mxmoe/bench.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {
namespace {

using nlohmann::json;

// Figures of one path of one row; fields a missing limit or time makes meaningless are left out.
json path_figures(const Report& report, const Row& row, const std::string& path) {
  const double us = row.path_us.at(path);
  json j;
  j["us"] = us;
  j["gb_per_s"] = gb_per_s(static_cast<double>(row.work.weight_bytes + row.work.activation_bytes), us);
  if (row.read_floor_us > 0) j["streaming_efficiency"] = streaming_efficiency(row.read_floor_us, us);
  j["tflop_per_s"] = tflop_per_s(row.work.flops, us);
  if (report.limits.gemm_tflop_per_s > 0) j["pct_of_gemm_rate"] = 100.0 * tflop_per_s(row.work.flops, us) / report.limits.gemm_tflop_per_s;
  if (row.read_floor_us > 0 && report.limits.gemm_tflop_per_s > 0)
    j["roofline_efficiency"] = roofline_efficiency(row.read_floor_us, row.work.flops, report.limits.gemm_tflop_per_s, us);
  if (path != "mxmoe" && row.path_us.count("mxmoe")) j["mxmoe_speedup"] = speedup(us, row.path_us.at("mxmoe"));
  return j;
}

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

std::string pad(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

}  // namespace

const char* copy_method() {
  return "copy kernel (16-byte loads and stores, 256-thread CTAs enough to cover the buffer in one pass), "
         "graph-captured and replayed like every path; (read + write bytes) / time";
}

const std::vector<std::string>& path_names() {
  static const std::vector<std::string> names = {"mxmoe", "cublas_bf16", "torch_bf16"};
  return names;
}

nlohmann::json to_json(const Report& report) {
  json j;
  j["shape"] = {{"name", report.shape.name},
                {"hidden", report.shape.hidden},
                {"inter", report.shape.inter},
                {"experts", report.shape.num_experts},
                {"top_k", report.shape.top_k},
                {"expert_weight_bytes", expert_weight_bytes(report.shape.hidden, report.shape.inter, report.shape.group)},
                {"group", report.shape.group}};
  j["meta"] = report.meta;
  j["limits"] = {{"copy_gb_per_s", report.limits.copy_gb_per_s},
                 {"copy_bytes", report.limits.copy_bytes},
                 {"copy_method", copy_method()},
                 {"memcpy_gb_per_s", report.limits.memcpy_gb_per_s},
                 {"gemm_tflop_per_s", report.limits.gemm_tflop_per_s},
                 {"gemm_n", report.limits.gemm_n}};
  j["prepare"] = {{"gpu_ms", report.prepare_ms}, {"wall_ms", report.prepare_wall_ms}};
  j["paths"] = path_names();
  j["rows"] = json::array();
  for (const Row& row : report.rows) {
    json r;
    r["tokens"] = row.work.tokens;
    r["experts_hit"] = row.work.experts_hit;
    r["expected_experts_hit"] = row.expected_hit;
    r["routed_pairs"] = row.work.routed_pairs;
    r["weight_bytes"] = row.work.weight_bytes;
    r["activation_bytes"] = row.work.activation_bytes;
    r["read_bytes"] = row.work.read_bytes;
    r["flops"] = row.work.flops;
    if (row.read_floor_us > 0) {
      r["read_floor_us"] = row.read_floor_us;
      r["read_floor_gb_per_s"] = gb_per_s(static_cast<double>(row.work.read_bytes), row.read_floor_us);
    }
    if (report.limits.gemm_tflop_per_s > 0) {
      const double compute_us = compute_floor_us(row.work.flops, report.limits.gemm_tflop_per_s);
      r["compute_floor_us"] = compute_us;
      if (row.read_floor_us > 0) {
        r["roofline_floor_us"] = roofline_floor_us(row.read_floor_us, row.work.flops, report.limits.gemm_tflop_per_s);
        r["roofline_bound"] = compute_us > row.read_floor_us ? "compute" : "read";
      }
    }
    r["paths"] = json::object();
    for (const auto& p : path_names())
      if (row.path_us.count(p)) r["paths"][p] = path_figures(report, row, p);
    r["notes"] = row.path_note;
    if (row.rel_err_vs_bf16 >= 0) r["rel_err_vs_bf16"] = row.rel_err_vs_bf16;
    if (!row.mxmoe_gemm.empty()) r["mxmoe_gemm"] = row.mxmoe_gemm;
    j["rows"].push_back(r);
  }
  return j;
}

std::string to_csv(const Report& report) {
  std::ostringstream os;
  os << "model,tokens,path,us,experts_hit,expected_experts_hit,weight_bytes,activation_bytes,read_bytes,flops,"
        "read_floor_us,gb_per_s,streaming_efficiency,tflop_per_s,pct_of_gemm_rate,mxmoe_speedup,roofline_floor_us,"
        "roofline_efficiency\n";
  os.precision(10);
  for (const Row& row : report.rows) {
    for (const auto& p : path_names()) {
      if (!row.path_us.count(p)) continue;
      const json f = path_figures(report, row, p);
      auto opt = [&](const char* key) { return f.contains(key) ? fmt("%.6g", f[key].get<double>()) : std::string(); };
      os << report.shape.name << ',' << row.work.tokens << ',' << p << ',' << fmt("%.6g", row.path_us.at(p)) << ','
         << row.work.experts_hit << ',' << fmt("%.6g", row.expected_hit) << ',' << row.work.weight_bytes << ','
         << row.work.activation_bytes << ',' << row.work.read_bytes << ',' << fmt("%.6g", row.work.flops) << ','
         << (row.read_floor_us > 0 ? fmt("%.6g", row.read_floor_us) : std::string()) << ',' << opt("gb_per_s") << ','
         << opt("streaming_efficiency") << ',' << opt("tflop_per_s") << ',' << opt("pct_of_gemm_rate") << ','
         << opt("mxmoe_speedup") << ','
         << (row.read_floor_us > 0 && report.limits.gemm_tflop_per_s > 0
                 ? fmt("%.6g", roofline_floor_us(row.read_floor_us, row.work.flops, report.limits.gemm_tflop_per_s))
                 : std::string())
         << ',' << opt("roofline_efficiency") << '\n';
    }
  }
  return os.str();
}

std::string format_table(const Report& report) {
  std::ostringstream os;
  const LayerShape& s = report.shape;
  os << s.name << ": H=" << s.hidden << " I=" << s.inter << " E=" << s.num_experts << " top-" << s.top_k
     << ", expert weights " << fmt("%.2f", expert_weight_bytes(s.hidden, s.inter, s.group) / 1048576.0) << " MiB at "
     << (s.group == 16 ? "4.5 bits (NVFP4)" : "4.25 bits") << "\n";
  if (report.limits.copy_gb_per_s > 0) {
    os << "limits: device copy " << fmt("%.0f", report.limits.copy_gb_per_s) << " GB/s (copy kernel, read+write bytes / time";
    if (report.limits.memcpy_gb_per_s > 0)
      os << "; graph-captured cudaMemcpy " << fmt("%.0f", report.limits.memcpy_gb_per_s) << " GB/s";
    os << "), cuBLAS bf16 GEMM " << report.limits.gemm_n << "^3 " << fmt("%.0f", report.limits.gemm_tflop_per_s)
       << " TFLOP/s\n";
  }
  if (report.prepare_ms >= 0)
    os << "prepare (whole layer, once): " << fmt("%.1f", report.prepare_ms) << " ms GPU, "
       << fmt("%.0f", report.prepare_wall_ms) << " ms wall with upload\n";
  if (const auto fold = report.meta.find("w4a8_fold"); fold != report.meta.end()) os << "W4A8 fold: " << fold->second << "\n";
  constexpr std::size_t kCols = 16;
  const char* head[kCols] = {"T",       "hit",   "exp.hit", "wt MiB",    "floor us", "mxmoe us", "eff",      "roof",
                             "GB/s",    "TFLOP/s", "%gemm", "cublas us", "x",        "torch us", "x",        "err"};
  const std::size_t width[kCols] = {6, 4, 7, 8, 9, 10, 5, 5, 6, 8, 6, 10, 6, 10, 6, 8};
  for (std::size_t c = 0; c < kCols; ++c) os << pad(head[c], width[c]) << (c + 1 < kCols ? " " : "\n");
  for (const Row& row : report.rows) {
    std::string cells[kCols];
    cells[0] = std::to_string(row.work.tokens);
    cells[1] = std::to_string(row.work.experts_hit);
    cells[2] = fmt("%.1f", row.expected_hit);
    cells[3] = fmt("%.1f", row.work.weight_bytes / 1048576.0);
    cells[4] = row.read_floor_us > 0 ? fmt("%.1f", row.read_floor_us) : "-";
    for (std::size_t c = 5; c < kCols; ++c) cells[c] = "-";
    if (row.path_us.count("mxmoe")) {
      const json f = path_figures(report, row, "mxmoe");
      cells[5] = fmt("%.1f", row.path_us.at("mxmoe"));
      if (f.contains("streaming_efficiency")) cells[6] = fmt("%.0f%%", 100 * f["streaming_efficiency"].get<double>());
      if (f.contains("roofline_efficiency")) cells[7] = fmt("%.0f%%", 100 * f["roofline_efficiency"].get<double>());
      cells[8] = fmt("%.0f", f["gb_per_s"].get<double>());
      cells[9] = fmt("%.1f", f["tflop_per_s"].get<double>());
      if (f.contains("pct_of_gemm_rate")) cells[10] = fmt("%.1f", f["pct_of_gemm_rate"].get<double>());
    }
    const char* baselines[] = {"cublas_bf16", "torch_bf16"};
    for (int b = 0; b < 2; ++b) {
      if (!row.path_us.count(baselines[b])) continue;
      cells[11 + 2 * b] = fmt("%.1f", row.path_us.at(baselines[b]));
      if (row.path_us.count("mxmoe")) cells[12 + 2 * b] = fmt("%.2f", speedup(row.path_us.at(baselines[b]), row.path_us.at("mxmoe")));
    }
    if (row.rel_err_vs_bf16 >= 0) cells[15] = fmt("%.1e", row.rel_err_vs_bf16);
    for (std::size_t c = 0; c < kCols; ++c) os << pad(cells[c], width[c]) << (c + 1 < kCols ? " " : "\n");
  }
  // Which GEMM path each row ran (auto-dispatch switches from mma.sync to wgmma with the pairs per expert).
  std::string gemm_line;
  for (const Row& row : report.rows)
    if (!row.mxmoe_gemm.empty()) gemm_line += (gemm_line.empty() ? "" : ", ") + ("T=" + std::to_string(row.work.tokens) + " " + row.mxmoe_gemm);
  if (!gemm_line.empty()) os << "mxmoe GEMM: " << gemm_line << "\n";
  bool any_note = false;
  for (const Row& row : report.rows)
    for (const auto& [path, note] : row.path_note) {
      if (!any_note) os << "notes:\n";
      any_note = true;
      os << "  T=" << row.work.tokens << " " << path << ": " << note << "\n";
    }
  return os.str();
}

void merge_torch_result(Report& report, const nlohmann::json& torch_result) {
  if (!torch_result.is_object() || !torch_result.contains("rows") || !torch_result["rows"].is_array())
    fail(ErrorCode::Format, "torch result: expected an object with a 'rows' array");
  if (torch_result.contains("meta") && torch_result["meta"].is_object() && torch_result["meta"].contains("torch") &&
      torch_result["meta"]["torch"].is_string())
    report.meta["torch"] = torch_result["meta"]["torch"].get<std::string>();
  const auto& rows = torch_result["rows"];
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (!r.is_object() || !r.contains("tokens") || !r["tokens"].is_number_integer())
      fail(ErrorCode::Format, "torch result: rows[" + std::to_string(i) + "] has no integer 'tokens'");
    const std::int64_t tokens = r["tokens"].get<std::int64_t>();
    Row* target = nullptr;
    for (Row& row : report.rows)
      if (row.work.tokens == tokens) target = &row;
    if (!target)
      fail(ErrorCode::Format, "torch result: rows[" + std::to_string(i) + "] has tokens=" + std::to_string(tokens) +
                                  ", which the bench did not run");
    if (r.contains("error") && r["error"].is_string()) {
      target->path_note["torch_bf16"] = r["error"].get<std::string>();
      continue;
    }
    if (!r.contains("us") || !r["us"].is_number() || !(r["us"].get<double>() > 0.0))
      fail(ErrorCode::Format, "torch result: rows[" + std::to_string(i) + "] needs a positive number 'us' or an 'error'");
    target->path_us["torch_bf16"] = r["us"].get<double>();
  }
}

nlohmann::json routing_document(const LayerShape& shape, const std::vector<TopK>& routings, std::uint64_t seed,
                                double skew) {
  json j;
  j["shape"] = {{"name", shape.name}, {"hidden", shape.hidden}, {"inter", shape.inter},
                {"experts", shape.num_experts}, {"top_k", shape.top_k}};
  j["seed"] = seed;
  j["skew"] = skew;
  j["rows"] = json::array();
  for (const TopK& r : routings) j["rows"].push_back({{"tokens", r.num_tokens}, {"ids", r.ids}});
  return j;
}

}  // namespace mxmoe::bench
