// `mxmoe bench` accounting against hand-computed cases: bytes, FLOPs, experts hit, derived figures.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "mxmoe/bench.hpp"
#include "test_util.hpp"
#include "mxmoe/error.hpp"

using namespace mxmoe;
using namespace mxmoe::bench;

namespace {

using test::expect_error;

const LayerShape kFlash{"dsv4-flash", 4096, 2048, 256, 6};
const LayerShape kGptOss{"gpt-oss-120b", 2880, 2880, 128, 4};

}  // namespace

TEST(BenchAccounting, ExpertWeightBytesAre425BitsPerWeight) {
  // 3*H*I weights at 4 bits plus one scale byte per 32: 3*4096*2048 = 25165824 weights.
  EXPECT_EQ(expert_weight_bytes(4096, 2048), 25165824 / 2 + 25165824 / 32);
  EXPECT_EQ(expert_weight_bytes(4096, 2048), 13369344);  // 13.4 MB, as REFERENCE.md says
  EXPECT_EQ(expert_weight_bytes(7168, 2048), 23396352);  // DeepSeek-V3: 23.4 MB
  EXPECT_EQ(expert_weight_bytes(2880, 2880), 13219200);  // 3*2880*2880*17/32
  EXPECT_EQ(expert_weight_bytes(32, 32), 3 * 32 * 32 * 17 / 32);
  expect_error([] { expert_weight_bytes(4096, 2000); }, "multiples of 32");
}

TEST(BenchAccounting, ExpectedExpertsHit) {
  EXPECT_DOUBLE_EQ(expected_experts_hit(256, 6, 0), 0.0);
  EXPECT_NEAR(expected_experts_hit(256, 6, 1), 6.0, 1e-12);  // one token hits exactly k experts
  EXPECT_NEAR(expected_experts_hit(4, 2, 2), 3.0, 1e-12);    // 4 * (1 - (1/2)^2)
  // 256 * (1 - (250/256)^4), (250/256)^2 = 0.95367431640625 exactly.
  EXPECT_NEAR(expected_experts_hit(256, 6, 4), 256.0 * (1.0 - 0.95367431640625 * 0.95367431640625), 1e-9);
  EXPECT_NEAR(expected_experts_hit(128, 4, 4), 128.0 * (1.0 - std::pow(124.0 / 128.0, 4)), 1e-9);
  EXPECT_NEAR(expected_experts_hit(8, 8, 3), 8.0, 1e-12);  // k = E: everything is hit
  EXPECT_NEAR(expected_experts_hit(256, 6, 16384), 256.0, 1e-9);
  expect_error([] { expected_experts_hit(8, 9, 1); }, "k=9");
  expect_error([] { expected_experts_hit(8, 2, -1); }, "T=-1");
}

TEST(BenchAccounting, DistinctExpertsFromIds) {
  TopK r;
  r.num_tokens = 3;
  r.top_k = 2;
  r.ids = {3, 5, 5, -1, 0, 3};
  r.weights.assign(6, 0.5f);
  EXPECT_EQ(distinct_experts_hit(r, 6), 3);  // {0, 3, 5}
  EXPECT_EQ(routed_pairs(r), 5);
  r.ids[4] = 6;
  expect_error([&] { distinct_experts_hit(r, 6); }, "entry 4 is 6");
  r.ids[4] = -2;
  expect_error([&] { distinct_experts_hit(r, 6); }, "entry 4 is -2");
}

TEST(BenchAccounting, RowWorkOfOneFlashToken) {
  const Work w = row_work(kFlash, 1, 6, 6);
  EXPECT_EQ(w.weight_bytes, 6 * 13369344);  // 80216064 B = 76.5 MiB, PEERS.md's figure
  EXPECT_NEAR(w.weight_bytes / 1048576.0, 76.5, 1e-9);
  EXPECT_EQ(w.activation_bytes, 4096 * 2 + 4096 * 2 + 6 * 8);
  EXPECT_EQ(w.read_bytes, 80216064 + 8192 + 48);
  EXPECT_DOUBLE_EQ(w.flops, 2.0 * 6 * 3 * 4096 * 2048);  // 301989888
}

TEST(BenchAccounting, RowWorkOfManyGptOssTokens) {
  const Work w = row_work(kGptOss, 4096, 128, 4096 * 4 - 3);  // three slots routed to -1
  EXPECT_EQ(w.weight_bytes, 128ll * 13219200);
  EXPECT_EQ(w.activation_bytes, 4096ll * 2880 * 4 + 4096ll * 4 * 8);
  EXPECT_EQ(w.read_bytes, 128ll * 13219200 + 4096ll * 2880 * 2 + 4096ll * 4 * 8);
  EXPECT_DOUBLE_EQ(w.flops, 2.0 * 16381 * 3 * 2880 * 2880);
}

TEST(BenchAccounting, RowWorkRejectsImpossibleCounts) {
  expect_error([] { row_work(kFlash, 0, 0, 0); }, "tokens must be positive");
  expect_error([] { row_work(kFlash, 1, 257, 6); }, "experts hit must be in 0..256, got 257");
  expect_error([] { row_work(kFlash, 1, 6, 7); }, "routed pairs must be in 0..T*k=6, got 7");
  expect_error([] { row_work(LayerShape{"bad", 4096, 2048, 8, 9}, 1, 1, 1); }, "topk must be in 1..8, got 9");
  expect_error([] { row_work(LayerShape{"bad", 100, 2048, 8, 2}, 1, 1, 1); }, "hidden must be a positive multiple of 32, got 100");
  expect_error([] { row_work(LayerShape{"bad", 4096, 0, 8, 2}, 1, 1, 1); }, "inter must be a positive multiple of 32, got 0");
  expect_error([] { row_work(LayerShape{"bad", 4096, 64, 0, 1}, 1, 1, 1); }, "experts must be positive");
}

TEST(BenchAccounting, DerivedFigures) {
  // 80216064 bytes in 38.4 us: 80216064 / 38.4e-6 / 1e9 = 2088.96 GB/s.
  EXPECT_NEAR(gb_per_s(80216064.0, 38.4), 2088.96, 1e-9);
  EXPECT_NEAR(tflop_per_s(301989888.0, 1.0), 301.989888, 1e-9);
  EXPECT_NEAR(tflop_per_s(2.0 * 8192.0 * 8192.0 * 8192.0, 1400.0), 785.3654484, 1e-6);  // 1099511627776 / 1.4e-3
  EXPECT_NEAR(streaming_efficiency(38.4, 71.2), 0.5393258426966292, 1e-12);
  EXPECT_NEAR(speedup(192.9, 71.2), 2.709269662921348, 1e-12);
  expect_error([] { gb_per_s(1.0, 0.0); }, "gb_per_s: time must be a positive");
  expect_error([] { speedup(1.0, std::nan("")); }, "speedup: time must be");
  expect_error([] { streaming_efficiency(-1.0, 2.0); }, "read floor");
  expect_error([] { tflop_per_s(1.0, std::numeric_limits<double>::infinity()); }, "tflop_per_s");
}

TEST(BenchAccounting, Median) {
  EXPECT_DOUBLE_EQ(median({5.0, 1.0, 3.0}), 3.0);
  EXPECT_DOUBLE_EQ(median({4.0, 1.0, 3.0, 2.0}), 2.5);
  EXPECT_DOUBLE_EQ(median({7.25}), 7.25);
  EXPECT_DOUBLE_EQ(median({9.0, 1.0, 1000.0, 2.0, 3.0}), 3.0);  // an outlier does not move it
  expect_error([] { median({}); }, "median of no samples");
  expect_error([] { median({1.0, std::nan(""), 2.0}); }, "sample 1 is NaN");
}

TEST(BenchAccounting, RooflineTakesTheLargerFloor) {
  // dsv4-flash, one token: 301989888 FLOPs at 800 TFLOP/s take 0.37748736 us; the read floor binds.
  EXPECT_NEAR(compute_floor_us(301989888.0, 800.0), 0.37748736, 1e-12);
  EXPECT_DOUBLE_EQ(roofline_floor_us(30.0, 301989888.0, 800.0), 30.0);
  EXPECT_NEAR(roofline_efficiency(30.0, 301989888.0, 800.0, 40.0), 0.75, 1e-12);  // = streaming efficiency
  // 16384 tokens x 6 pairs: 2 * 98304 * 3 * 4096 * 2048 = 4.9478e12 FLOPs, 6184.8 us at 800 TFLOP/s:
  // compute binds over an 800 us read floor, and 12369.5 us runs at 50% of the roofline.
  const double flops = 2.0 * 98304 * 3 * 4096 * 2048;
  EXPECT_NEAR(compute_floor_us(flops, 800.0), flops / 800e12 * 1e6, 1e-9);
  EXPECT_NEAR(roofline_floor_us(800.0, flops, 800.0), 6184.75290624, 1e-6);
  EXPECT_NEAR(roofline_efficiency(800.0, flops, 800.0, 2 * 6184.75290624), 0.5, 1e-12);
  EXPECT_LT(streaming_efficiency(800.0, 2 * 6184.75290624), 0.07);  // the streaming figure says nothing here
  EXPECT_DOUBLE_EQ(compute_floor_us(0.0, 800.0), 0.0);  // every id masked: only the read floor is left
  EXPECT_DOUBLE_EQ(roofline_floor_us(12.5, 0.0, 800.0), 12.5);
  expect_error([] { compute_floor_us(1.0, 0.0); }, "GEMM rate must be a positive");
  expect_error([] { compute_floor_us(-1.0, 800.0); }, "FLOPs must be a finite number >= 0");
  expect_error([] { compute_floor_us(std::nan(""), 800.0); }, "FLOPs must be");
  expect_error([] { roofline_floor_us(0.0, 1.0, 800.0); }, "roofline_floor_us (read floor)");
  expect_error([] { roofline_efficiency(1.0, 1.0, 800.0, -2.0); }, "roofline_efficiency: time must be");
  expect_error([] { roofline_efficiency(1.0, 1.0, std::numeric_limits<double>::infinity(), 2.0); }, "GEMM rate");
}
