// `mxmoe bench`: times mxmoe's MoE forward against the card's limits and against bf16 baselines,
// and writes the table, JSON, CSV (and the torch baseline's inputs) for bench/plot.py.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "command.hpp"
#include "mxmoe/bench.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/presets.hpp"
#ifdef MXMOE_HAVE_CUDA
#include "mxmoe/bench_run.hpp"
#endif

namespace mxmoe::cli {
namespace {

const char* kFigures = R"(
Every row is one token count T. Routing: one normal(0,1) logit per (token, expert), plus
-skew*ln(1+e) for expert e when --skew > 0; top-k by logit, weights = softmax over the k chosen.
Timing: each path is captured in a CUDA graph, replayed --warmup times, then --reps times; before
every timed replay --flush-mb MiB are written (cudaMemsetAsync) so L2 holds none of the inputs;
the flush lies outside the CUDA events around the replay; the median replay is reported.
  hit        distinct experts the row's routing touches (exp.hit: E*(1-(1-k/E)^T), the expectation)
  wt MiB     weight bytes = hit x 3*H*I*17/32 (4-bit E2M1 + one E8M0 byte per 32; biases not counted)
  activation bytes (JSON/CSV) = T*H*2 hidden in + T*H*2 output + T*k*8 ids and weights
  read bytes = weight bytes + T*H*2 + T*k*8: what the forward must read at least
  floor us   the read floor: time of one streaming read kernel (16-byte loads, grid-stride,
             nothing written) over exactly the row's read bytes, L2 flushed, timed like the rest
  mxmoe us   mxmoe::MoeLayer::forward from (topk ids, topk weights) to the combined bf16 output
  eff        streaming efficiency = floor us / mxmoe us (1.0 = as fast as merely reading the bytes)
  GB/s       (weight bytes + activation bytes) / time
  TFLOP/s    FLOPs / time, FLOPs = 2 * (routed token-expert pairs) * 3*H*I (a multiply-add counts 2;
             both GEMMs; activation and combine not counted)
  %gemm      TFLOP/s as a percentage of the cuBLAS bf16 GEMM rate measured in the same run
  cublas us  bf16 baseline: the layer's MXFP4 weights dequantised once to bf16, then per expert hit
             two cublasGemmEx over its gathered tokens, activation and weighted combine kernels
  torch us   bench/torch_grouped_mm.py: bf16 weights of the same shapes through torch._grouped_mm,
             on the same routing (ids read from routing-<model>.json), timed the same way
  x          speed-up of mxmoe over that baseline (baseline time / mxmoe time)
  err        ||mxmoe - cublas||_F / ||cublas||_F over the row's output (same weights and inputs)
  roof       roofline efficiency = max(floor us, FLOPs / cuBLAS GEMM rate) / mxmoe us: against
             whichever limit binds (reading the bytes or doing the FLOPs at the measured GEMM rate),
             so compute-bound, skewed and uniform rows compare (JSON/CSV: roofline_efficiency, with
             compute_floor_us, roofline_floor_us and roofline_bound read|compute per row)
Limits measured first in the same run: the device copy, 1 GiB device-to-device by a copy kernel of
the bench's own (16-byte loads and stores, 256-thread CTAs enough to cover the buffer in one pass:
one vector per thread), graph-captured and replayed like every path, reported as
(read + write bytes) / time; the same copy as one graph-captured cudaMemcpy (slower: ~2760 against
~4270 GB/s on an H200; what the bench reported before) is kept in the JSON as limits.memcpy_gb_per_s
and on the limits line. And the cuBLAS bf16 GEMM rate (--gemm-n cubed, fp32 accumulate). The prepare line is mxmoe's one-time
weight preparation of the whole layer (GPU time, and wall time of the constructor with upload).
Files in --out-dir: <model>.json, <model>.csv, <model>.txt, routing-<model>.json, torch-<model>.json;
bench/plot.py <model>.json draws them.
--sweep-shapes N: N random layer shapes drawn from --seed instead of a preset: E log-uniform in
8..512, H and I log-uniform in 256..8192 in multiples of 32, top-k uniform in 1..min(8,E), the
activation one of silu, clamped-silu (limit 10) and gpt-oss (with biases); a layer over
--sweep-max-gib is drawn again. The limits are measured once; per shape the read floor and mxmoe at
each --tokens (default 1,16,64), no bf16 or torch baseline. One line per (shape, T): experts hit,
floor, mxmoe time, eff (streaming) and roofline efficiency; then a summary (min with its shape and T,
median, rows below 65% streaming). Files: sweep.json, sweep.csv, sweep.txt. --sweep-list prints the
shapes and exits (no GPU needed).
Exit status: 0 done; 1 a sweep in which some (shape, T) has no mxmoe time (its line says why);
2 without a Hopper GPU or on bad options.)";

struct BenchOptions {
  std::string preset = "dsv4-flash";
  int hidden = 0, inter = 0, experts = 0, topk = 0;
  std::string tokens;
  int reps = 100, warmup = 10, flush_mb = 256, gemm_n = 8192, device = 0;
  double skew = 0.0;
  std::uint64_t seed = 1;
  bool no_bf16 = false, no_torch = false, quiet = false, batch_invariant = false;
  std::string gemm_tile = "auto";
  std::string act = "bf16";
  std::string format = "mxfp4";
  std::string torch_script = "bench/torch_grouped_mm.py", python = "python3", out_dir = "bench-out", commit = "unknown";
  int sweep_shapes = 0;
  double sweep_max_gib = 16.0;
  bool sweep_list = false;
};

struct Resolved {
  std::vector<bench::SweepShape> sweep;  // --sweep-shapes: these instead of `shape`
  bench::LayerShape shape;
  ActivationConfig activation;
  bool biases = false;
  std::vector<int> tokens;
  GemmTile gemm_tile = GemmTile::Auto;
  WeightFormat format;
  bool wide_scales = false;  // --format mxfp4-wide (or mxfp4-span)
  bool span_scales = false;  // --format mxfp4-span
};

Resolved resolve(const BenchOptions& o, bool preset_given) {
  Resolved r;
  const bool custom = o.hidden || o.inter || o.experts || o.topk;
  if (o.sweep_list && o.sweep_shapes <= 0) fail(ErrorCode::InvalidArgument, "bench: --sweep-list needs --sweep-shapes N");
  if (o.sweep_shapes < 0)
    fail(ErrorCode::InvalidArgument, "bench: --sweep-shapes must be at least 1, got " + std::to_string(o.sweep_shapes));
  if (o.sweep_shapes > 0 && (preset_given || custom))
    fail(ErrorCode::InvalidArgument, "bench: --sweep-shapes draws its own shapes; give no --preset and no custom shape with it");
  if (o.sweep_shapes > 0) {
    r.shape = {"sweep", 256, 256, 8, 1};  // a placeholder, validated below; the sweep's shapes are r.sweep
  } else if (custom) {
    if (preset_given) fail(ErrorCode::InvalidArgument, "bench: give either --preset or a custom shape (--hidden --inter --experts --topk), not both");
    if (!o.hidden || !o.inter || !o.experts || !o.topk)
      fail(ErrorCode::InvalidArgument, "bench: a custom shape needs all of --hidden, --inter, --experts and --topk");
    r.shape = {"custom-" + std::to_string(o.hidden) + "x" + std::to_string(o.inter) + "-e" + std::to_string(o.experts) +
                   "k" + std::to_string(o.topk),
               o.hidden, o.inter, o.experts, o.topk};
  } else {
    const ModelPreset& p = find_preset(o.preset);
    r.shape = {p.name, p.hidden, p.inter, p.num_experts, p.top_k};
    r.activation = p.activation;
    r.biases = p.biases;
  }
  if (o.format == "nvfp4") r.format = WeightFormat::nvfp4_with(DType::BF16);
  else if (o.format == "nvfp4-f16") r.format = WeightFormat::nvfp4_with(DType::F16);
  else if (o.format == "mxfp4-wide") r.wide_scales = true;
  else if (o.format == "mxfp4-span") r.wide_scales = r.span_scales = true;
  else if (o.format != "mxfp4")
    fail(ErrorCode::InvalidArgument, "bench: --format must be mxfp4, mxfp4-wide, mxfp4-span, nvfp4 or nvfp4-f16, got '" + o.format + "'");
  r.shape.group = r.format.group_size;
  r.shape.validate();
  r.gemm_tile = parse_gemm_tile(o.gemm_tile);
  if (o.sweep_shapes > 0) {
    if (!(o.sweep_max_gib > 0.0) || o.sweep_max_gib > 1024.0)
      fail(ErrorCode::InvalidArgument, "bench: --sweep-max-gib must be in (0, 1024], got " + std::to_string(o.sweep_max_gib));
    bench::SweepRanges ranges;
    ranges.max_layer_bytes = static_cast<std::int64_t>(o.sweep_max_gib * 1073741824.0);
    r.sweep = bench::random_shapes(o.sweep_shapes, o.seed, r.format.group_size, ranges);
  }
  const char* default_tokens = o.sweep_shapes > 0 ? "1,16,64" : nullptr;
  r.tokens = !o.tokens.empty()  ? bench::parse_token_list(o.tokens, 65536)
             : default_tokens ? bench::parse_token_list(default_tokens, 65536)
                              : bench::default_token_sweep();
  if (o.reps < 1 || o.warmup < 0) fail(ErrorCode::InvalidArgument, "bench: need --reps >= 1 and --warmup >= 0");
  if (o.flush_mb < 0) fail(ErrorCode::InvalidArgument, "bench: --flush-mb must be >= 0");
  if (!(o.skew >= 0.0)) fail(ErrorCode::InvalidArgument, "bench: --skew must be >= 0, got " + std::to_string(o.skew));
  return r;
}

#ifdef MXMOE_HAVE_CUDA
void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) fail(ErrorCode::Io, "bench: cannot write " + path.string());
}

// Runs the torch baseline on the routing the sweep used and merges its times into the report.
void run_torch(const BenchOptions& o, const std::filesystem::path& routing, const std::filesystem::path& result,
               const Resolved& r, bench::Report& report) {
  auto note_all = [&](const std::string& why) {
    for (auto& row : report.rows) row.path_note["torch_bf16"] = why;
  };
  if (!std::filesystem::exists(o.torch_script)) return note_all("script " + o.torch_script + " not found");
  std::filesystem::remove(result);
  const std::string cmd = o.python + " '" + o.torch_script + "' --routing '" + routing.string() + "' --out '" +
                          result.string() + "' --reps " + std::to_string(o.reps) + " --warmup " +
                          std::to_string(o.warmup) + " --flush-mb " + std::to_string(o.flush_mb) + " --activation " +
                          activation_kind_name(r.activation.kind) + " --limit " + std::to_string(r.activation.limit) + (r.biases ? " --biases" : "") + " 1>&2";
  const int status = std::system(cmd.c_str());
  if (status != 0) return note_all("torch script failed (status " + std::to_string(status) + "), see its messages");
  std::ifstream f(result);
  nlohmann::json j;
  try {
    f >> j;
  } catch (const std::exception& e) {
    return note_all(std::string("torch result unreadable: ") + e.what());
  }
  bench::merge_torch_result(report, j);
}

bench::BenchConfig make_config(const BenchOptions& o, const Resolved& r) {
  bench::BenchConfig config;
  config.shape = r.shape;
  config.activation = r.activation;
  config.biases = r.biases;
  config.tokens = r.tokens;
  config.skew = o.skew;
  config.seed = o.seed;
  config.timing.reps = o.reps;
  config.timing.warmup = o.warmup;
  config.timing.flush_bytes = static_cast<std::size_t>(o.flush_mb) << 20;
  config.run_bf16 = !o.no_bf16;
  config.gemm_n = o.gemm_n;
  config.device = o.device;
  config.gemm_tile = r.gemm_tile;
  config.batch_invariant = o.batch_invariant;
  config.activation_precision = parse_activation_precision(o.act);
  config.format = r.format;
  config.wide_scales = r.wide_scales;
  config.span_scales = r.span_scales;
  return config;
}

// --sweep-shapes: the limits once, then per shape the read floor and mxmoe at every T; one line per
// (shape, T) on stdout as each shape finishes, the summary last. A shape whose run throws is reported
// and the sweep goes on.
int run_sweep(const BenchOptions& o, const Resolved& r) {
  namespace fs = std::filesystem;
  const auto start = std::chrono::steady_clock::now();
  auto progress = [&](const std::string& who, const std::string& what) {
    if (o.quiet) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "[%7.1fs] %s: %s\n", s, who.c_str(), what.c_str());
  };
  bench::BenchConfig base = make_config(o, r);
  base.run_bf16 = false;
  progress("sweep", "measuring the device copy bandwidth (copy kernel and cudaMemcpy) and the cuBLAS bf16 GEMM rate");
  const bench::Limits limits = bench::measure_limits(base);
  base.limits = limits;
  std::string text;
  auto say = [&](const std::string& line) {
    std::cout << line << std::flush;
    text += line;
  };
  {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "sweep of %zu random shapes (seed %llu, format %s, skew %g): limits: device copy %.0f GB/s (copy kernel, "
                  "read+write bytes / time; graph-captured cudaMemcpy %.0f), cuBLAS bf16 GEMM %d^3 %.0f TFLOP/s\n",
                  r.sweep.size(), static_cast<unsigned long long>(o.seed), o.format.c_str(), o.skew, limits.copy_gb_per_s,
                  limits.memcpy_gb_per_s, limits.gemm_n, limits.gemm_tflop_per_s);
    say(buf);
  }
  std::vector<bench::Report> reports;
  for (std::size_t i = 0; i < r.sweep.size(); ++i) {
    const bench::SweepShape& shape = r.sweep[i];
    bench::BenchConfig config = base;
    config.shape = shape.shape;
    config.activation = shape.activation;
    config.biases = shape.biases;
    bench::Report report;
    try {
      report = bench::run_bench(config, [&](const std::string& what) { progress(shape.shape.name, what); }).report;
    } catch (const std::exception& e) {
      // The whole shape failed (memory, a CUDA error): one row per T without times, saying why.
      report = bench::Report{};
      report.shape = shape.shape;
      report.limits = limits;
      report.meta["error"] = e.what();
      for (int t : r.tokens) {
        bench::Row row;
        row.work.tokens = t;
        row.path_note["mxmoe"] = std::string("the shape's run failed: ") + e.what();
        report.rows.push_back(row);
      }
    }
    report.meta["commit"] = o.commit;
    report.meta["tool"] = "mxmoe bench --sweep-shapes";
    for (const bench::Row& row : report.rows) say(bench::format_sweep_line(shape, i, r.sweep.size(), report, row) + "\n");
    reports.push_back(std::move(report));
  }
  const bench::SweepSummary summary = bench::summarize_sweep(reports);
  say(bench::format_sweep_summary(summary));
  fs::create_directories(o.out_dir);
  const fs::path dir(o.out_dir);
  write_file(dir / "sweep.json", bench::sweep_to_json(r.sweep, reports, summary).dump(2) + "\n");
  write_file(dir / "sweep.csv", bench::sweep_to_csv(reports));
  write_file(dir / "sweep.txt", text);
  progress("sweep", "wrote " + (dir / "sweep").string() + ".{json,csv,txt}");
  if (summary.failed) {
    std::fprintf(stderr, "mxmoe bench: %zu of %zu (shape, T) rows of the sweep have no mxmoe time; their lines say why\n",
                 summary.failed, summary.rows);
    return 1;
  }
  return 0;
}

int run(const BenchOptions& o, const Resolved& r) {
  namespace fs = std::filesystem;
  if (!r.sweep.empty()) return run_sweep(o, r);
  const bench::BenchConfig config = make_config(o, r);
  const auto start = std::chrono::steady_clock::now();
  auto progress = [&](const std::string& what) {
    if (o.quiet) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "[%7.1fs] %s: %s\n", s, r.shape.name.c_str(), what.c_str());
  };
  bench::BenchRun result = bench::run_bench(config, progress);
  bench::Report& report = result.report;
  report.meta["commit"] = o.commit;
  report.meta["tool"] = "mxmoe bench";

  fs::create_directories(o.out_dir);
  const fs::path dir(o.out_dir);
  const fs::path routing = dir / ("routing-" + r.shape.name + ".json");
  write_file(routing, bench::routing_document(r.shape, result.routings, o.seed, o.skew).dump());
  if (o.no_torch) {
    for (auto& row : report.rows) row.path_note["torch_bf16"] = "not run (--no-torch)";
  } else {
    progress("running the torch._grouped_mm baseline");
    run_torch(o, routing, dir / ("torch-" + r.shape.name + ".json"), r, report);
  }
  const std::string table = bench::format_table(report);
  write_file(dir / (r.shape.name + ".json"), bench::to_json(report).dump(2) + "\n");
  write_file(dir / (r.shape.name + ".csv"), bench::to_csv(report));
  write_file(dir / (r.shape.name + ".txt"), table);
  std::cout << table << std::flush;
  progress("wrote " + (dir / r.shape.name).string() + ".{json,csv,txt}");
  return 0;
}
#endif

const RegisterCommand kBench{
    "bench", "time the MoE forward against the card's limits and bf16 baselines (table, JSON, CSV)", 50,
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<BenchOptions>();
      auto* preset = sub.add_option("--preset", o->preset,
                                    "model shape: dsv4-flash, dsv4-pro, dsv3, gpt-oss-120b, gpt-oss-20b, qwen3-30b")
                         ->capture_default_str();
      sub.add_option("--hidden", o->hidden, "custom shape: hidden size H (multiple of 32)");
      sub.add_option("--inter", o->inter, "custom shape: expert intermediate size I (multiple of 32)");
      sub.add_option("--experts", o->experts, "custom shape: number of experts E");
      sub.add_option("--topk", o->topk, "custom shape: experts per token k");
      sub.add_option("--tokens", o->tokens, "comma-separated token counts (default 1,4,16,64,256,1024,4096,16384)");
      sub.add_option("--reps", o->reps, "timed replays per measurement (median reported)")->capture_default_str();
      sub.add_option("--warmup", o->warmup, "untimed replays first")->capture_default_str();
      sub.add_option("--flush-mb", o->flush_mb, "MiB written before every timed replay to flush L2 (0: no flush)")
          ->capture_default_str();
      sub.add_option("--skew", o->skew, "Zipf-like router bias -skew*ln(1+e) (0: uniform random routing)")
          ->capture_default_str();
      sub.add_option("--seed", o->seed, "seed of weights, hidden states and routing")->capture_default_str();
      sub.add_option("--gemm-n", o->gemm_n, "size of the cuBLAS GEMM rate measurement (n^3)")->capture_default_str();
      sub.add_flag("--no-bf16", o->no_bf16, "skip the cuBLAS bf16 baseline");
      sub.add_flag("--no-torch", o->no_torch, "skip the torch._grouped_mm baseline");
      sub.add_option("--torch-script", o->torch_script, "the torch baseline script")->capture_default_str();
      sub.add_option("--python", o->python, "Python interpreter for the torch script")->capture_default_str();
      sub.add_option("--out-dir", o->out_dir, "folder for the JSON, CSV, table and routing files")->capture_default_str();
      sub.add_option("--commit", o->commit, "commit id recorded in the JSON")->capture_default_str();
      sub.add_option("--device", o->device, "CUDA device index")->capture_default_str();
      sub.add_flag("--quiet", o->quiet, "no progress lines on stderr");
      sub.add_option("--format", o->format,
                     "weights: mxfp4 (E8M0 per 32, bf16 activations), mxfp4-wide (the same with one E8M0 byte above "
                     "128, 200, over zero codes: the layer runs mxfp4-shifted, a per-row exponent shift folded "
                     "into the epilogue), mxfp4-span (also byte 0 in the same w2 row, over zero codes: a span "
                     "above 128 within one row, the pathological case that runs the two-multiply mxfp4-wide), "
                     "nvfp4 (UE4M3 per 16 + "
                     "global scales, bf16) or nvfp4-f16 (the same with fp16 activations); the read floor counts the "
                     "format's scale bytes")
          ->capture_default_str();
      sub.add_option("--gemm-tile", o->gemm_tile,
                     "GEMM configuration: auto (blocks sized by the average pairs per expert, plus a wgmma lane for "
                     "the experts that hold more than one such block, counted on the GPU per forward; the plan of "
                     "each row is printed under the table), or, forced for every expert, for tuning: tiny or decode "
                     "(8 routed pairs per block), small (16), medium (32), prefill (64) on mma.sync, wgmma (128, "
                     "Hopper's warpgroup MMA, the compute-bound path; N 64 or 128 by a block's live pairs), or "
                     "wgmma-narrow (64, N 32 or 64: experts holding a few tens of pairs), or wgmma-small (32, N 16 or 32)")
          ->capture_default_str();
      sub.add_option("--act", o->act,
                     "activation precision: bf16 (W4A16, the default) or fp8 (W4A8: each token's hidden row and each "
                     "routed pair's intermediate quantised to E4M3 with a per-row scale, FP8 warpgroup MMA at twice "
                     "the bf16 rate; MXFP4 weights only; the layer reports its format as mxfp4-e4m3)")
          ->capture_default_str();
      sub.add_flag("--batch-invariant", o->batch_invariant,
                   "time the layer in its batch-invariant mode (a token's output bit-identical in any batch: "
                   "mma.sync only, no K split), to see what the mode costs");
      sub.add_option("--sweep-shapes", o->sweep_shapes,
                     "N random layer shapes (from --seed) instead of a preset: E 8..512, H and I multiples of 32 in "
                     "256..8192, top-k 1..8; one line per (shape, T) with streaming and roofline efficiency, then a "
                     "summary; --tokens defaults to 1,16,64");
      sub.add_option("--sweep-max-gib", o->sweep_max_gib,
                     "with --sweep-shapes: a drawn layer whose weights exceed this many GiB is drawn again")
          ->capture_default_str();
      sub.add_flag("--sweep-list", o->sweep_list, "with --sweep-shapes: print the drawn shapes and exit (no GPU needed)");
      sub.footer(kFigures);
      return [o, preset]() -> int {
        const Resolved r = resolve(*o, preset->count() > 0);
        if (o->sweep_list) {
          for (std::size_t i = 0; i < r.sweep.size(); ++i) {
            const bench::SweepShape& sh = r.sweep[i];
            std::printf("%-30s E=%-3d H=%-4d I=%-4d top-%d %-12s%s weights %.2f GiB\n", sh.shape.name.c_str(),
                        sh.shape.num_experts, sh.shape.hidden, sh.shape.inter, sh.shape.top_k,
                        activation_kind_name(sh.activation.kind), sh.biases ? " biases" : "       ",
                        static_cast<double>(sh.shape.num_experts) *
                            static_cast<double>(bench::expert_weight_bytes(sh.shape.hidden, sh.shape.inter, sh.shape.group)) /
                            1073741824.0);
          }
          return 0;
        }
#ifdef MXMOE_HAVE_CUDA
        return run(*o, r);
#else
        (void)r;
        fail(ErrorCode::Unsupported, "bench needs the CUDA backend and a Hopper GPU; this build of mxmoe has no CUDA backend");
#endif
      };
    }};

}  // namespace
}  // namespace mxmoe::cli
