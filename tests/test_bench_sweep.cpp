// `mxmoe bench --sweep-shapes`: the random shapes (ranges, determinism, multiples of 32, top-k <= E,
// the layer-size cap) and the sweep's lines, summary, JSON and CSV.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "mxmoe/bench.hpp"
#include "mxmoe/error.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::bench;

namespace {

using test::expect_error;

bool same(const SweepShape& a, const SweepShape& b) {
  return a.shape.name == b.shape.name && a.shape.hidden == b.shape.hidden && a.shape.inter == b.shape.inter &&
         a.shape.num_experts == b.shape.num_experts && a.shape.top_k == b.shape.top_k && a.shape.group == b.shape.group &&
         a.activation.kind == b.activation.kind && a.activation.limit == b.activation.limit && a.biases == b.biases;
}

// A sweep report of one shape with rows at T=1 (fast), T=16 (slow) and T=64 (failed).
Report sweep_report() {
  Report rep;
  rep.shape = {"sweep01-e64-h1024-i2048-k4", 1024, 2048, 64, 4};
  rep.limits = {4200.0, 1 << 30, 800.0, 8192, 2700.0};
  Row a;
  a.work = row_work(rep.shape, 1, 4, 4);
  a.read_floor_us = 10.0;
  a.path_us["mxmoe"] = 12.5;  // 80%
  Row b;
  b.work = row_work(rep.shape, 16, 40, 64);
  b.read_floor_us = 50.0;
  b.path_us["mxmoe"] = 100.0;  // 50%
  Row c;
  c.work = row_work(rep.shape, 64, 60, 256);
  c.read_floor_us = 80.0;
  c.path_note["mxmoe"] = "MoeLayer could not be created: out of memory";
  rep.rows = {a, b, c};
  return rep;
}

}  // namespace

TEST(BenchSweepShapes, WithinTheRangesAndValid) {
  const std::vector<SweepShape> shapes = random_shapes(400, 1);
  ASSERT_EQ(shapes.size(), 400u);
  std::set<int> experts, topk, acts;
  int small_h = 0, large_h = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const LayerShape& s = shapes[i].shape;
    SCOPED_TRACE(s.name);
    EXPECT_GE(s.num_experts, 8);
    EXPECT_LE(s.num_experts, 512);
    for (int d : {s.hidden, s.inter}) {
      EXPECT_EQ(d % 32, 0);
      EXPECT_GE(d, 256);
      EXPECT_LE(d, 8192);
    }
    EXPECT_GE(s.top_k, 1);
    EXPECT_LE(s.top_k, std::min(8, s.num_experts));
    EXPECT_EQ(s.group, 32);
    EXPECT_NO_THROW(s.validate());
    EXPECT_NO_THROW(shapes[i].activation.validate());
    EXPECT_LE(static_cast<std::int64_t>(s.num_experts) * expert_weight_bytes(s.hidden, s.inter), std::int64_t(16) << 30);
    // Biases go with the gpt-oss activation, as in gpt-oss; the name says the shape.
    EXPECT_EQ(shapes[i].biases, shapes[i].activation.kind == ActivationKind::GptOssSwiglu);
    char name[96];
    std::snprintf(name, sizeof name, "sweep%02zu-e%d-h%d-i%d-k%d", i + 1, s.num_experts, s.hidden, s.inter, s.top_k);
    EXPECT_EQ(s.name, name);
    experts.insert(s.num_experts);
    topk.insert(s.top_k);
    acts.insert(static_cast<int>(shapes[i].activation.kind));
    small_h += s.hidden < 1024;
    large_h += s.hidden >= 4096;
  }
  // The draws cover the ranges: every top-k, every activation, small and large layers.
  EXPECT_EQ(topk.size(), 8u);
  EXPECT_EQ(acts.size(), 3u);
  EXPECT_GT(experts.size(), 100u);
  EXPECT_LT(*experts.begin(), 12);
  EXPECT_GT(*experts.rbegin(), 400);
  EXPECT_GT(small_h, 40);  // log-uniform: P(H < 1024) = ln 4 / ln 32 = 0.4
  EXPECT_GT(large_h, 40);  // P(H >= 4096) = 0.2
}

TEST(BenchSweepShapes, DeterministicInTheSeed) {
  const std::vector<SweepShape> a = random_shapes(20, 7), b = random_shapes(20, 7), c = random_shapes(20, 8);
  ASSERT_EQ(a.size(), 20u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(same(a[i], b[i])) << a[i].shape.name << " vs " << b[i].shape.name;
  int differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i) differ += !same(a[i], c[i]);
  EXPECT_GT(differ, 15);
  // A prefix of a longer sweep is the shorter sweep: --sweep-shapes 5 runs the first 5 of 20.
  const std::vector<SweepShape> five = random_shapes(5, 7);
  for (std::size_t i = 0; i < five.size(); ++i) EXPECT_TRUE(same(five[i], a[i]));
}

TEST(BenchSweepShapes, NarrowRangesCapAndGroup) {
  SweepRanges r;
  r.min_experts = r.max_experts = 8;
  r.min_dim = r.max_dim = 256;
  r.max_top_k = 8;
  for (const SweepShape& s : random_shapes(50, 2, 16, r)) {
    EXPECT_EQ(s.shape.num_experts, 8);
    EXPECT_EQ(s.shape.hidden, 256);
    EXPECT_EQ(s.shape.inter, 256);
    EXPECT_EQ(s.shape.group, 16);  // NVFP4
  }
  SweepRanges few;
  few.min_experts = 2;
  few.max_experts = 3;
  for (const SweepShape& s : random_shapes(100, 4, 32, few)) EXPECT_LE(s.shape.top_k, s.shape.num_experts);
  // A 1 GiB cap: every layer under it, still deterministic.
  SweepRanges capped;
  capped.max_layer_bytes = std::int64_t(1) << 30;
  const std::vector<SweepShape> small = random_shapes(100, 5, 32, capped);
  for (const SweepShape& s : small)
    EXPECT_LE(static_cast<std::int64_t>(s.shape.num_experts) * expert_weight_bytes(s.shape.hidden, s.shape.inter),
              capped.max_layer_bytes);
  EXPECT_TRUE(same(small[99], random_shapes(100, 5, 32, capped)[99]));
  expect_error([] { random_shapes(0, 1); }, "the number of shapes must be at least 1, got 0");
  expect_error([] { random_shapes(1, 1, 8); }, "the group must be 32 or 16, got 8");
  SweepRanges bad;
  bad.min_dim = 100;
  expect_error([&] { random_shapes(1, 1, 32, bad); }, "needs multiples of 32");
  bad = SweepRanges{};
  bad.max_experts = 4;
  expect_error([&] { random_shapes(1, 1, 32, bad); }, "experts range 8..4 is empty");
  bad = SweepRanges{};
  bad.max_layer_bytes = 1000;
  expect_error([&] { random_shapes(1, 1, 32, bad); }, "below the smallest layer");
}

TEST(BenchSweepReport, OneLinePerShapeAndTokenCount) {
  const Report rep = sweep_report();
  SweepShape shape;
  shape.shape = rep.shape;
  shape.activation = ActivationConfig::clamped_silu_mul(10.0f);
  const std::string l1 = format_sweep_line(shape, 2, 20, rep, rep.rows[0]);
  EXPECT_EQ(l1.rfind("[ 3/20] sweep01-e64-h1024-i2048-k4", 0), 0u) << l1;
  EXPECT_NE(l1.find("clamped-silu"), std::string::npos) << l1;
  EXPECT_NE(l1.find("T=1 "), std::string::npos) << l1;
  EXPECT_NE(l1.find("hit    4"), std::string::npos) << l1;
  EXPECT_NE(l1.find("floor     10.0 us"), std::string::npos) << l1;
  EXPECT_NE(l1.find("mxmoe     12.5 us"), std::string::npos) << l1;
  EXPECT_NE(l1.find("eff  80%  roofline  80%"), std::string::npos) << l1;
  const std::string l3 = format_sweep_line(shape, 2, 20, rep, rep.rows[2]);
  EXPECT_NE(l3.find("mxmoe FAILED: MoeLayer could not be created: out of memory"), std::string::npos) << l3;
  // The columns line up: the floor starts at the same offset in every line.
  EXPECT_EQ(l1.find("floor"), l3.find("floor"));
}

TEST(BenchSweepReport, RooflineBindsOnComputeHeavyRows) {
  // One shape, one row whose FLOPs at the GEMM rate take longer than reading its bytes.
  Report rep;
  rep.shape = {"sweep01-e8-h8192-i8192-k8", 8192, 8192, 8, 8};
  rep.limits = {4200.0, 1 << 30, 800.0, 8192, 0.0};
  Row row;
  row.work = row_work(rep.shape, 4096, 8, 4096 * 8);  // 2 * 32768 * 3 * 8192^2 = 1.319e13 FLOPs: 16492 us
  row.read_floor_us = 400.0;
  row.path_us["mxmoe"] = 2 * 16492.674416640;
  rep.rows = {row};
  SweepShape shape;
  shape.shape = rep.shape;
  const std::string line = format_sweep_line(shape, 0, 1, rep, row);
  EXPECT_NE(line.find("eff   1%  roofline  50%"), std::string::npos) << line;
  const SweepSummary s = summarize_sweep({rep});
  EXPECT_NEAR(s.min_roofline, 0.5, 1e-9);
  EXPECT_EQ(to_json(rep)["rows"][0]["roofline_bound"], "compute");
}

TEST(BenchSweepReport, SummaryMinMedianAndFailures) {
  Report a = sweep_report(), b = sweep_report();
  b.shape.name = "sweep02-e8-h256-i256-k1";
  b.rows[0].path_us["mxmoe"] = 40.0;  // 25%: the minimum
  b.rows[2].path_us["mxmoe"] = 100.0;  // 80%
  b.rows[2].path_note.clear();
  const SweepSummary s = summarize_sweep({a, b});
  EXPECT_EQ(s.rows, 6u);
  EXPECT_EQ(s.timed, 5u);
  EXPECT_EQ(s.failed, 1u);
  EXPECT_DOUBLE_EQ(s.min_streaming, 0.25);
  EXPECT_EQ(s.min_streaming_at, "sweep02-e8-h256-i256-k1 T=1");
  EXPECT_DOUBLE_EQ(s.median_streaming, 0.5);  // 0.8, 0.5, 0.25, 0.5, 0.8
  EXPECT_EQ(s.below_threshold, 3u);           // under 65%: 0.5, 0.25, 0.5
  EXPECT_DOUBLE_EQ(s.min_roofline, 0.25);     // the read floor binds everywhere here
  EXPECT_DOUBLE_EQ(s.median_roofline, 0.5);
  const std::string text = format_sweep_summary(s);
  EXPECT_NE(text.find("sweep: 6 (shape, T) rows, 5 timed, 1 failed"), std::string::npos) << text;
  EXPECT_NE(text.find("streaming efficiency (read floor / time): min 25% (sweep02-e8-h256-i256-k1 T=1), median 50%; 3 rows below 65%"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("roofline efficiency (max(read floor, FLOPs / GEMM rate) / time): min 25%"), std::string::npos) << text;
  EXPECT_NE(text.find("1 rows have no mxmoe time"), std::string::npos) << text;

  const SweepSummary none = summarize_sweep({});
  EXPECT_EQ(none.rows, 0u);
  EXPECT_NE(format_sweep_summary(none).find("no efficiency to summarise"), std::string::npos);
}

TEST(BenchSweepReport, JsonAndCsvHoldEveryShape) {
  Report a = sweep_report(), b = sweep_report();
  b.shape.name = "sweep02-e8-h256-i256-k1";
  std::vector<SweepShape> shapes(2);
  shapes[0].shape = a.shape;
  shapes[1].shape = b.shape;
  shapes[1].activation = ActivationConfig::gpt_oss();
  shapes[1].biases = true;
  const SweepSummary s = summarize_sweep({a, b});
  const nlohmann::json j = sweep_to_json(shapes, {a, b}, s);
  ASSERT_EQ(j["shapes"].size(), 2u);
  EXPECT_EQ(j["shapes"][1]["shape"]["name"], "sweep02-e8-h256-i256-k1");
  EXPECT_EQ(j["shapes"][1]["activation"]["kind"], "gpt-oss");
  EXPECT_EQ(j["shapes"][1]["biases"], true);
  EXPECT_NEAR(j["shapes"][0]["rows"][0]["paths"]["mxmoe"]["roofline_efficiency"].get<double>(), 0.8, 1e-12);
  EXPECT_EQ(j["summary"]["failed"], 2);
  EXPECT_DOUBLE_EQ(j["summary"]["streaming_efficiency"]["min"].get<double>(), 0.5);
  expect_error([&] { sweep_to_json(shapes, {a}, s); }, "2 shapes but 1 reports");

  const std::string csv = sweep_to_csv({a, b});
  int headers = 0, lines = 0;
  for (std::size_t p = csv.find("model,tokens"); p != std::string::npos; p = csv.find("model,tokens", p + 1)) ++headers;
  for (char c : csv) lines += c == '\n';
  EXPECT_EQ(headers, 1);
  EXPECT_EQ(lines, 1 + 2 + 2);  // the header, two timed rows per shape
  EXPECT_NE(csv.find("sweep02-e8-h256-i256-k1,16,mxmoe,100,"), std::string::npos) << csv;
  EXPECT_EQ(sweep_to_csv({}).rfind("model,tokens,path,us", 0), 0u);
}
