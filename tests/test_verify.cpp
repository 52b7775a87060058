// The verification toolkit (mxmoe/verify.hpp) every check relies on: the metric's one NaN rule, its
// zero-reference rule, and random inputs that are reproducible and honour their masks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "formats/bf16.hpp"
#include "formats/fp16.hpp"
#include "mxmoe/verify.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::verify;

namespace {

constexpr std::uint16_t kBf16One = 0x3f80, kBf16Two = 0x4000, kBf16NaN = 0x7fc0, kBf16Inf = 0x7f80;

TEST(Verify, RelativeErrorIsTheRelativeFrobeniusNorm) {
  const std::vector<double> want = {3.0, 4.0}, got = {3.0, 4.5};
  const Comparison c = compare(got, want);
  EXPECT_DOUBLE_EQ(c.relative_error, 0.5 / 5.0);
  EXPECT_DOUBLE_EQ(c.max_abs_error, 0.5);
  EXPECT_DOUBLE_EQ(c.max_abs_want, 4.0);
  EXPECT_TRUE(c.finite);
  EXPECT_DOUBLE_EQ(relative_error(std::vector<std::uint16_t>{kBf16Two}, std::vector<std::uint16_t>{kBf16One}), 1.0);
  EXPECT_DOUBLE_EQ(relative_error(std::vector<std::uint16_t>{kBf16Two}, std::vector<double>{2.0}), 0.0);
}

// NaN or infinity anywhere, on either side, never passes any tolerance.
TEST(Verify, NonFiniteValuesNeverPass) {
  for (std::uint16_t bad : {kBf16NaN, kBf16Inf}) {
    const std::vector<std::uint16_t> good = {kBf16One, kBf16Two}, with_bad = {kBf16One, bad};
    for (const Comparison& c : {compare(with_bad, good), compare(good, with_bad)}) {
      EXPECT_FALSE(c.finite);
      EXPECT_FALSE(c.relative_error < 1e9);
      EXPECT_FALSE(c.relative_error <= 1e9);
    }
  }
}

TEST(Verify, AllZeroReference) {
  EXPECT_EQ(relative_error(std::vector<double>{0.0, 0.0}, std::vector<double>{0.0, 0.0}), 0.0);
  EXPECT_TRUE(std::isinf(relative_error(std::vector<double>{0.0, 1e-30}, std::vector<double>{0.0, 0.0})));
  test::expect_error([] { compare(std::vector<double>{1.0}, std::vector<double>{1.0, 2.0}); }, ErrorCode::InvalidArgument,
                     "comparing 1 values against 2");
}

TEST(Verify, RandomInputsAreReproducible) {
  EXPECT_EQ(random_hidden(3, 64, 7), random_hidden(3, 64, 7));
  EXPECT_NE(random_hidden(3, 64, 7), random_hidden(3, 64, 8));
  EXPECT_EQ(random_logits(2, 5, 1), random_logits(2, 5, 1));
  const TopK a = random_topk(9, 8, 3, 5), b = random_topk(9, 8, 3, 5);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.weights, b.weights);
}

TEST(Verify, RandomTopKHasDistinctExpertsAndHonoursItsMasks) {
  const int T = 40, E = 8, k = 4;
  const TopK plain = random_topk(T, E, k, 3);
  ASSERT_EQ(plain.ids.size(), static_cast<std::size_t>(T * k));
  for (int t = 0; t < T; ++t) {
    std::vector<int> ids(plain.ids.begin() + t * k, plain.ids.begin() + (t + 1) * k);
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << "token " << t;
    for (int s = 0; s < k; ++s) {
      EXPECT_GE(ids[s], 0);
      EXPECT_LT(ids[s], E);
      EXPECT_GE(plain.weights[t * k + s], 0.1f);
    }
  }
  const TopK masked = random_topk(T, E, k, 3, TopKMask::slot_of_every(1, 3));
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < k; ++s)
      EXPECT_EQ(masked.ids[t * k + s], s == 1 && t % 3 == 0 ? -1 : plain.ids[t * k + s]) << t << " " << s;
  for (int id : random_topk(T, E, k, 3, TopKMask::experts_from_id(E / 2)).ids) EXPECT_LT(id, E / 2);
  for (int id : random_topk(T, E, k, 3, TopKMask::dropping(1.0)).ids) EXPECT_EQ(id, -1);
  test::expect_error([] { random_topk(1, 4, 5, 1); }, ErrorCode::InvalidArgument, "top_k in 1..4, got 5");
}

TEST(Verify, SampledRowsSpreadOverTheBatch) {
  EXPECT_EQ(spread_rows(3, 5), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(spread_rows(64, 4), (std::vector<int>{0, 21, 42, 63}));
  const std::vector<int> m = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(take_rows(m, 2, {2, 0}), (std::vector<int>{5, 6, 1, 2}));
  const TopK t = random_topk(4, 8, 2, 1);
  const TopK sub = take_rows(t, {3});
  EXPECT_EQ(sub.num_tokens, 1);
  EXPECT_EQ(sub.ids, (std::vector<std::int32_t>{t.ids[6], t.ids[7]}));
}

}  // namespace

TEST(VerifyFp16, RandomHiddenAndCompareTakeTheActivationDtype) {
  const auto bf = verify::random_hidden(3, 64, 9, 2.0);
  const auto h = verify::random_hidden(3, 64, 9, 2.0, DType::F16);
  ASSERT_EQ(h.size(), bf.size());
  for (std::size_t i = 0; i < h.size(); ++i)
    ASSERT_EQ(static_cast<double>(formats::fp16_to_float(h[i])), static_cast<double>(formats::bf16_to_float(bf[i]))) << i;
  EXPECT_EQ(verify::compare(h, h, DType::F16).relative_error, 0.0);
  // The same bits read as fp16 and as bf16 are different numbers: the dtype matters.
  std::vector<std::uint16_t> one16 = {0x3C00}, one_bf = {0x3F80};  // 1.0 in fp16 and in bf16
  EXPECT_EQ(verify::compare(one16, std::vector<double>{1.0}, DType::F16).relative_error, 0.0);
  EXPECT_EQ(verify::compare(one_bf, std::vector<double>{1.0}, DType::BF16).relative_error, 0.0);
  EXPECT_GT(verify::compare(one16, std::vector<double>{1.0}, DType::BF16).relative_error, 0.5);
  const std::vector<std::uint16_t> nan16 = {0x7E00};
  EXPECT_FALSE(verify::compare(nan16, one16, DType::F16).finite);
  EXPECT_THROW(verify::random_hidden(1, 32, 1, 1.0, DType::F32), Error);
}
