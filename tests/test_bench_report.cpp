// `mxmoe bench`: token lists, routing, the report (JSON, CSV, table) and merging the torch result.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <string>

#include "mxmoe/bench.hpp"
#include "test_util.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"

using namespace mxmoe;
using namespace mxmoe::bench;

namespace {

using test::expect_error;

// A report of two rows with hand-picked times: T=1 with everything, T=4096 without the floor.
Report sample_report() {
  Report rep;
  rep.shape = {"dsv4-flash", 4096, 2048, 256, 6};
  rep.limits = {3000.0, 1 << 30, 780.0, 8192, 2700.0};
  rep.prepare_ms = 120.5;
  rep.prepare_wall_ms = 900.0;
  Row a;
  a.work = row_work(rep.shape, 1, 6, 6);
  a.expected_hit = 6.0;
  a.read_floor_us = 38.4;
  a.path_us = {{"mxmoe", 50.0}, {"cublas_bf16", 150.0}, {"torch_bf16", 200.0}};
  a.rel_err_vs_bf16 = 2.5e-3;
  a.mxmoe_gemm = "tiny";
  Row b;
  b.work = row_work(rep.shape, 4096, 256, 4096 * 6);
  b.expected_hit = 256.0;
  b.path_us = {{"mxmoe", 4000.0}};
  b.path_note["cublas_bf16"] = "does not fit";
  b.mxmoe_gemm = "wgmma";
  rep.rows = {a, b};
  return rep;
}

}  // namespace

TEST(BenchTokens, DefaultSweepAndParsing) {
  EXPECT_EQ(default_token_sweep(), (std::vector<int>{1, 4, 16, 64, 256, 1024, 4096, 16384}));
  EXPECT_EQ(parse_token_list("1,4,16", 100), (std::vector<int>{1, 4, 16}));
  EXPECT_EQ(parse_token_list("7", 100), (std::vector<int>{7}));
  expect_error([] { parse_token_list("1,x", 100); }, "'x' is not an integer");
  expect_error([] { parse_token_list("1,2 ", 100); }, "'2 ' is not an integer");
  expect_error([] { parse_token_list("0", 100); }, "0 is outside 1..100");
  expect_error([] { parse_token_list("101", 100); }, "101 is outside 1..100");
  expect_error([] { parse_token_list("4,4", 100); }, "4 is given twice");
  expect_error([] { parse_token_list("", 100); }, "empty list");
}

TEST(BenchRouting, TopKIsValidDeterministicAndSpread) {
  const TopK r = bench_routing(64, 256, 6, 0.0, 7);
  ASSERT_EQ(r.ids.size(), 64u * 6);
  for (int t = 0; t < 64; ++t) {
    std::set<int> seen;
    double sum = 0.0;
    for (int s = 0; s < 6; ++s) {
      const int e = r.ids[t * 6 + s];
      EXPECT_TRUE(e >= 0 && e < 256);
      EXPECT_TRUE(seen.insert(e).second) << "token " << t << " picks expert " << e << " twice";
      const float w = r.weights[t * 6 + s];
      EXPECT_TRUE(w > 0.0f && w <= 1.0f);
      if (s > 0) {
        EXPECT_LE(w, r.weights[t * 6 + s - 1]);  // chosen by descending logit
      }
      sum += w;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  const TopK again = bench_routing(64, 256, 6, 0.0, 7);
  EXPECT_EQ(r.ids, again.ids);
  EXPECT_EQ(r.weights, again.weights);
  EXPECT_NE(bench_routing(64, 256, 6, 0.0, 8).ids, r.ids);
  // Random logits spread like uniform choice: expectation 256*(1-(250/256)^64) = 199.8.
  const int hit = distinct_experts_hit(r, 256);
  EXPECT_NEAR(hit, expected_experts_hit(256, 6, 64), 12.0);
}

TEST(BenchRouting, SkewConcentratesOnLowIds) {
  const TopK uniform = bench_routing(256, 128, 4, 0.0, 3), skewed = bench_routing(256, 128, 4, 2.0, 3);
  EXPECT_LT(distinct_experts_hit(skewed, 128), distinct_experts_hit(uniform, 128));
  int low = 0;
  for (int e : skewed.ids) low += e < 16;
  EXPECT_GT(low, static_cast<int>(skewed.ids.size()) / 2);  // uniform would put 1/8 there
  expect_error([] { bench_routing(4, 8, 9, 0.0, 1); }, "k=9");
  expect_error([] { bench_routing(0, 8, 2, 0.0, 1); }, "T=0");
  expect_error([] { bench_routing(4, 8, 2, -1.0, 1); }, "skew must be >= 0");
}

TEST(BenchReport, JsonCarriesEveryFigure) {
  const nlohmann::json j = to_json(sample_report());
  EXPECT_EQ(j["shape"]["expert_weight_bytes"], 13369344);
  EXPECT_EQ(j["limits"]["gemm_tflop_per_s"], 780.0);
  EXPECT_EQ(j["prepare"]["gpu_ms"], 120.5);
  const auto& r0 = j["rows"][0];
  EXPECT_EQ(r0["tokens"], 1);
  EXPECT_EQ(r0["mxmoe_gemm"], "tiny");
  EXPECT_EQ(j["rows"][1]["mxmoe_gemm"], "wgmma");
  EXPECT_EQ(r0["experts_hit"], 6);
  EXPECT_EQ(r0["weight_bytes"], 80216064);
  EXPECT_NEAR(r0["read_floor_gb_per_s"].get<double>(), (80216064.0 + 8192 + 48) / 38.4e-6 / 1e9, 1e-6);
  const auto& mx = r0["paths"]["mxmoe"];
  EXPECT_NEAR(mx["streaming_efficiency"].get<double>(), 38.4 / 50.0, 1e-12);
  EXPECT_NEAR(mx["gb_per_s"].get<double>(), (80216064.0 + 16432) / 50e-6 / 1e9, 1e-6);
  EXPECT_NEAR(mx["tflop_per_s"].get<double>(), 301989888.0 / 50e-6 / 1e12, 1e-9);
  EXPECT_NEAR(mx["pct_of_gemm_rate"].get<double>(), 100.0 * 301989888.0 / 50e-6 / 1e12 / 780.0, 1e-9);
  EXPECT_FALSE(mx.contains("mxmoe_speedup"));
  EXPECT_NEAR(r0["paths"]["cublas_bf16"]["mxmoe_speedup"].get<double>(), 3.0, 1e-12);
  EXPECT_NEAR(r0["paths"]["torch_bf16"]["mxmoe_speedup"].get<double>(), 4.0, 1e-12);
  EXPECT_NEAR(r0["rel_err_vs_bf16"].get<double>(), 2.5e-3, 1e-15);
  // Roofline: one token's 301989888 FLOPs take 0.387 us at 780 TFLOP/s; the 38.4 us read floor binds.
  EXPECT_NEAR(r0["compute_floor_us"].get<double>(), 301989888.0 / 780e12 * 1e6, 1e-12);
  EXPECT_DOUBLE_EQ(r0["roofline_floor_us"].get<double>(), 38.4);
  EXPECT_EQ(r0["roofline_bound"], "read");
  EXPECT_NEAR(mx["roofline_efficiency"].get<double>(), 38.4 / 50.0, 1e-12);
  EXPECT_NEAR(r0["paths"]["cublas_bf16"]["roofline_efficiency"].get<double>(), 38.4 / 150.0, 1e-12);
  EXPECT_EQ(j["limits"]["memcpy_gb_per_s"], 2700.0);
  EXPECT_NE(j["limits"]["copy_method"].get<std::string>().find("copy kernel (16-byte loads and stores"), std::string::npos);
  const auto& r1 = j["rows"][1];
  EXPECT_FALSE(r1.contains("read_floor_us"));
  EXPECT_FALSE(r1["paths"]["mxmoe"].contains("streaming_efficiency"));
  EXPECT_FALSE(r1["paths"]["mxmoe"].contains("roofline_efficiency"));  // no read floor, no roofline
  EXPECT_FALSE(r1.contains("roofline_floor_us"));
  EXPECT_NEAR(r1["compute_floor_us"].get<double>(), 2.0 * 24576 * 3 * 4096 * 2048 / 780e12 * 1e6, 1e-9);
  EXPECT_FALSE(r1["paths"].contains("cublas_bf16"));
  EXPECT_EQ(r1["notes"]["cublas_bf16"], "does not fit");
  EXPECT_NEAR(r1["paths"]["mxmoe"]["tflop_per_s"].get<double>(), 2.0 * 24576 * 3 * 4096 * 2048 / 4000e-6 / 1e12, 1e-9);
}

TEST(BenchReport, CsvHasOneLinePerMeasuredPath) {
  const std::string csv = to_csv(sample_report());
  int lines = 0;
  for (char c : csv) lines += c == '\n';
  EXPECT_EQ(lines, 1 + 3 + 1);  // header, three paths at T=1, mxmoe at T=4096
  EXPECT_NE(csv.find("dsv4-flash,1,cublas_bf16,150,6,6,80216064,16432,80224304,"), std::string::npos) << csv;
  // speed-up over cuBLAS, then the roofline floor (the read floor binds) and efficiency 38.4 / 150
  EXPECT_NE(csv.find(",3,38.4,0.256\n"), std::string::npos) << "speed-up or roofline missing:\n" << csv;
  EXPECT_NE(csv.find("mxmoe_speedup,roofline_floor_us,roofline_efficiency\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("dsv4-flash,4096,mxmoe,4000,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",,\n"), std::string::npos) << "T=4096 has no floor, so no roofline:\n" << csv;
}

TEST(BenchReport, TableShowsTimesSpeedupsAndNotes) {
  const std::string t = format_table(sample_report());
  EXPECT_NE(t.find("floor us"), std::string::npos) << t;
  EXPECT_NE(t.find("   77%   77% "), std::string::npos) << t;  // eff and roof: 38.4 / 50, the read floor binds
  EXPECT_NE(t.find(" roof "), std::string::npos) << t;
  EXPECT_NE(t.find("limits: device copy 3000 GB/s (copy kernel, read+write bytes / time; graph-captured cudaMemcpy 2700 GB/s)"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("3.00"), std::string::npos) << t;    // over cuBLAS
  EXPECT_NE(t.find("4.00"), std::string::npos) << t;    // over torch
  EXPECT_NE(t.find("2.5e-03"), std::string::npos) << t;
  EXPECT_NE(t.find("T=4096 cublas_bf16: does not fit"), std::string::npos) << t;
  EXPECT_NE(t.find("prepare (whole layer, once): 120.5 ms GPU"), std::string::npos) << t;
  EXPECT_NE(t.find("mxmoe GEMM: T=1 tiny, T=4096 wgmma\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("W4A8 fold"), std::string::npos) << t;  // bf16: no fold line
  // W4A8: the groups prepare re-quantised, in describe_fold's words.
  Report fp8 = sample_report();
  W4a8FoldCounts c;
  c.groups = 4096;
  c.requantized_groups = 3;
  c.changed_elements = 17;
  fp8.meta["w4a8_fold"] = "w13 " + describe_fold(c) + "; w2 " + describe_fold(W4a8FoldCounts{});
  EXPECT_NE(format_table(fp8).find("W4A8 fold: w13 3 of 4096 groups re-quantised (0.07%), 17 element(s) changed; w2 0 of 0 groups "
                                   "re-quantised (0.00%), 0 element(s) changed\n"),
            std::string::npos)
      << format_table(fp8);
}

TEST(BenchReport, MergeTorchResult) {
  Report rep = sample_report();
  rep.rows[0].path_us.erase("torch_bf16");
  merge_torch_result(rep, nlohmann::json::parse(R"({"meta": {"torch": "2.11.0"}, "rows": [{"tokens": 1, "us": 123.5},
                                                             {"tokens": 4096, "error": "out of memory"}]})"));
  EXPECT_DOUBLE_EQ(rep.rows[0].path_us.at("torch_bf16"), 123.5);
  EXPECT_EQ(rep.rows[1].path_note.at("torch_bf16"), "out of memory");
  EXPECT_EQ(rep.meta.at("torch"), "2.11.0");
  expect_error([&] { merge_torch_result(rep, nlohmann::json::parse(R"({"rows": [{"tokens": 2, "us": 1}]})")); },
               "tokens=2, which the bench did not run");
  expect_error([&] { merge_torch_result(rep, nlohmann::json::parse(R"({"rows": [{"tokens": 1, "us": -1}]})")); },
               "rows[0] needs a positive number 'us'");
  expect_error([&] { merge_torch_result(rep, nlohmann::json::parse(R"({"rows": [{"us": 1}]})")); },
               "rows[0] has no integer 'tokens'");
  expect_error([&] { merge_torch_result(rep, nlohmann::json::parse(R"([1, 2])")); }, "'rows' array");
}

TEST(BenchReport, RoutingDocumentHoldsTheIds) {
  const TopK r = bench_routing(3, 16, 2, 0.0, 5);
  const nlohmann::json j = routing_document({"tiny", 64, 32, 16, 2}, {r}, 5, 0.0);
  EXPECT_EQ(j["shape"]["experts"], 16);
  EXPECT_EQ(j["rows"][0]["tokens"], 3);
  EXPECT_EQ(j["rows"][0]["ids"].get<std::vector<int>>(), std::vector<int>(r.ids.begin(), r.ids.end()));
}

#ifdef MXMOE_CLI
namespace {
// The CLI's exit status, and what it printed (stdout + stderr) in `output`.
int run_cli(const std::string& args, std::string* output) {
  const test::CliRun r = test::run_cli(args);
  *output += r.output();
  return r.rc;
}
}  // namespace

TEST(BenchCli, BadOptionsExitTwoWithAMessage) {
  std::string out;
  EXPECT_EQ(run_cli("bench --preset nope", &out), 2);
  EXPECT_NE(out.find("unknown model preset 'nope'"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --tokens 1,0", &out), 2);
  EXPECT_NE(out.find("--tokens: 0 is outside"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --hidden 4096 --inter 2048", &out), 2);
  EXPECT_NE(out.find("needs all of --hidden, --inter, --experts and --topk"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --preset dsv3 --hidden 4096 --inter 2048 --experts 8 --topk 2", &out), 2);
  EXPECT_NE(out.find("not both"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --hidden 100 --inter 2048 --experts 8 --topk 2", &out), 2);
  EXPECT_NE(out.find("hidden must be a positive multiple of 32, got 100"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --skew -1", &out), 2);
  EXPECT_NE(out.find("--skew must be >= 0"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --gemm-tile 16", &out), 2);
  EXPECT_NE(out.find("unknown GEMM tile '16' (known: auto, tiny, decode, small, medium, prefill, wgmma, wgmma-narrow, wgmma-small)"), std::string::npos) << out;
}

TEST(BenchCli, SweepOptionsAreChecked) {
  std::string out;
  EXPECT_EQ(run_cli("bench --sweep-shapes 3 --preset dsv3", &out), 2);
  EXPECT_NE(out.find("--sweep-shapes draws its own shapes"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --sweep-shapes 3 --hidden 4096 --inter 2048 --experts 8 --topk 2", &out), 2);
  EXPECT_NE(out.find("--sweep-shapes draws its own shapes"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --sweep-shapes -1", &out), 2);
  EXPECT_NE(out.find("--sweep-shapes must be at least 1"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --sweep-list", &out), 2);
  EXPECT_NE(out.find("--sweep-list needs --sweep-shapes N"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --sweep-shapes 2 --sweep-max-gib 0", &out), 2);
  EXPECT_NE(out.find("--sweep-max-gib must be in (0, 1024]"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_cli("bench --sweep-shapes 2 --sweep-max-gib 0.0001", &out), 2);
  EXPECT_NE(out.find("below the smallest layer"), std::string::npos) << out;
}

TEST(BenchCli, SweepListPrintsTheShapesWithoutAGpu) {
  std::string out;
  ASSERT_EQ(run_cli("bench --sweep-shapes 5 --seed 3 --sweep-list", &out), 0) << out;
  const std::vector<SweepShape> shapes = random_shapes(5, 3);
  for (const SweepShape& s : shapes) EXPECT_NE(out.find(s.shape.name), std::string::npos) << out;
  std::string again;
  ASSERT_EQ(run_cli("bench --sweep-shapes 5 --seed 3 --sweep-list", &again), 0);
  EXPECT_EQ(out, again);
  std::string nv;
  ASSERT_EQ(run_cli("bench --sweep-shapes 5 --seed 3 --sweep-list --format nvfp4", &nv), 0) << nv;
  EXPECT_NE(nv.find(shapes[0].shape.name), std::string::npos) << nv;  // the same draws, 4.5 bits each
}

TEST(BenchCli, WithoutCudaItExitsTwoSayingSo) {
  if (cuda_backend_compiled()) GTEST_SKIP() << "this build has the CUDA backend; the device run covers bench";
  std::string out;
  EXPECT_EQ(run_cli("bench --tokens 1", &out), 2);
  EXPECT_NE(out.find("no CUDA backend"), std::string::npos) << out;
}

TEST(BenchCli, HelpExplainsTheFigures) {
  std::string out;
  EXPECT_EQ(run_cli("bench --help", &out), 0);
  for (const char* term : {"streaming efficiency", "read floor", "experts the row's routing touches", "%gemm",
                           "speed-up of mxmoe", "3*H*I*17/32", "E*(1-(1-k/E)^T)", "roofline efficiency",
                           "max(floor us, FLOPs / cuBLAS GEMM rate)", "copy kernel", "(read + write bytes) / time",
                           "memcpy_gb_per_s", "--sweep-shapes", "--sweep-list", "rows below 65% streaming"})
    EXPECT_NE(out.find(term), std::string::npos) << "help lacks '" << term << "'";
  for (const char* format : {"mxfp4-wide", "mxfp4-shifted", "mxfp4-span"})
    EXPECT_NE(out.find(format), std::string::npos) << "help lacks the format '" << format << "'";
}
#endif

TEST(BenchCli, FormatNamesAreCheckedBeforeAnyGpuWork) {
  std::string out;
  EXPECT_EQ(run_cli("bench --format mxfp8 --sweep-shapes 2 --sweep-list", &out), 2);
  EXPECT_NE(out.find("mxfp4, mxfp4-wide, mxfp4-span, nvfp4 or nvfp4-f16, got 'mxfp8'"), std::string::npos) << out;
  EXPECT_EQ(run_cli("bench --format mxfp4-wide --sweep-shapes 2 --sweep-list", &out), 0) << out;
  EXPECT_EQ(run_cli("bench --format mxfp4-span --sweep-shapes 2 --sweep-list", &out), 0) << out;
}
