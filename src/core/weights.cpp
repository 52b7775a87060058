#include "mxmoe/weights.hpp"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "core/random.hpp"
#include "formats/mxfp4.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {
namespace {

void expect(const HostTensor& t, const char* name, DType dtype, const Shape& shape) {
  if (t.empty()) fail(ErrorCode::NotFound, std::string("canonical weights: tensor '") + name + "' is missing (expected " + dtype_name(dtype) + " " + shape_str(shape) + ")");
  if (t.dtype() != dtype)
    fail(ErrorCode::DType, std::string("canonical weights: tensor '") + name + "' has dtype " + dtype_name(t.dtype()) + ", expected " + dtype_name(dtype));
  if (t.shape() != shape)
    fail(ErrorCode::Shape, std::string("canonical weights: tensor '") + name + "' has shape " + shape_str(t.shape()) + ", expected " + shape_str(shape));
}

void expect_no_nan_scale(const HostTensor& t, const char* name) {
  const auto* p = t.as<std::uint8_t>();
  const std::int64_t n = t.numel();
  for (std::int64_t i = 0; i < n; ++i)
    if (p[i] == formats::kE8m0Nan)
      fail(ErrorCode::Format, std::string("canonical weights: tensor '") + name + "' holds the E8M0 NaN byte 0xFF at flat index " + std::to_string(i));
}

}  // namespace

void CanonicalMoeWeights::validate() const {
  const std::int64_t E = num_experts, H = hidden, I = inter;
  if (E <= 0 || H <= 0 || I <= 0)
    fail(ErrorCode::Shape, "canonical weights: E, H, I must be positive, got E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" + std::to_string(I));
  if (H % 32 != 0 || I % 32 != 0)
    fail(ErrorCode::Shape, "canonical weights: H and I must be multiples of the MXFP4 group (32), got H=" + std::to_string(H) + " I=" + std::to_string(I));
  expect(w13, "w13", DType::U8, {E, 2 * I, H / 2});
  expect(w13_scale, "w13_scale", DType::U8, {E, 2 * I, H / 32});
  expect(w2, "w2", DType::U8, {E, H, I / 2});
  expect(w2_scale, "w2_scale", DType::U8, {E, H, I / 32});
  if (w13_bias) expect(*w13_bias, "w13_bias", DType::F32, {E, 2 * I});
  if (w2_bias) expect(*w2_bias, "w2_bias", DType::F32, {E, H});
  if (router_weight) expect(*router_weight, "router_weight", DType::F32, {E, H});
  if (correction_bias) expect(*correction_bias, "correction_bias", DType::F32, {E});
  expect_no_nan_scale(w13_scale, "w13_scale");
  expect_no_nan_scale(w2_scale, "w2_scale");
}

std::size_t CanonicalMoeWeights::expert_weight_bytes() const {
  const std::size_t H = hidden, I = inter;
  return 3 * H * I / 2 + 3 * H * I / 32;
}

namespace {

// Random E2M1 codes (uniform over the 16) under scale bytes near `base`: the rms of a uniform
// code is about 2.93, so base = 127 + round(log2(std / 2.93)) gives roughly the asked std.
void fill_mxfp4(SplitMix64& rng, std::uint8_t* packed, std::uint8_t* scales, std::int64_t rows, std::int64_t k, int base) {
  for (std::int64_t i = 0; i < rows * k / 2; i += 8) {
    std::uint64_t r = rng.next();
    for (int b = 0; b < 8 && i + b < rows * k / 2; ++b) packed[i + b] = static_cast<std::uint8_t>(r >> (8 * b));
  }
  for (std::int64_t i = 0; i < rows * k / 32; ++i)
    scales[i] = static_cast<std::uint8_t>(base - 1 + static_cast<int>(rng.next() % 3));
}

void fill_normal(SplitMix64& rng, float* out, std::int64_t n, double std) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(rng.normal() * std);
}

}  // namespace

CanonicalMoeWeights make_synthetic_weights(const SyntheticSpec& spec) {
  CanonicalMoeWeights w;
  w.num_experts = spec.num_experts;
  w.hidden = spec.hidden;
  w.inter = spec.inter;
  const std::int64_t E = spec.num_experts, H = spec.hidden, I = spec.inter;
  if (E <= 0 || H <= 0 || I <= 0 || H % 32 || I % 32)
    fail(ErrorCode::Shape, "synthetic weights: need positive E and H, I multiples of 32; got E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" + std::to_string(I));
  if (!(spec.weight_std > 0.0f)) fail(ErrorCode::InvalidArgument, "synthetic weights: weight_std must be positive");
  w.w13 = HostTensor::zeros(DType::U8, {E, 2 * I, H / 2});
  w.w13_scale = HostTensor::zeros(DType::U8, {E, 2 * I, H / 32});
  w.w2 = HostTensor::zeros(DType::U8, {E, H, I / 2});
  w.w2_scale = HostTensor::zeros(DType::U8, {E, H, I / 32});
  const int base = 127 + static_cast<int>(std::lround(std::log2(spec.weight_std / 2.93)));

  auto* w13 = w.w13.mutable_as<std::uint8_t>();
  auto* s13 = w.w13_scale.mutable_as<std::uint8_t>();
  auto* w2 = w.w2.mutable_as<std::uint8_t>();
  auto* s2 = w.w2_scale.mutable_as<std::uint8_t>();
  const unsigned threads = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 32u));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::int64_t e = t; e < E; e += threads) {
        SplitMix64 rng(stream_seed(spec.seed, static_cast<std::uint64_t>(e)));
        fill_mxfp4(rng, w13 + e * 2 * I * H / 2, s13 + e * 2 * I * H / 32, 2 * I, H, base);
        fill_mxfp4(rng, w2 + e * H * I / 2, s2 + e * H * I / 32, H, I, base);
      }
    });
  for (auto& th : pool) th.join();

  SplitMix64 rng(stream_seed(spec.seed, 0xB1A5ull));
  if (spec.with_biases) {
    w.w13_bias = HostTensor::zeros(DType::F32, {E, 2 * I});
    w.w2_bias = HostTensor::zeros(DType::F32, {E, H});
    fill_normal(rng, w.w13_bias->mutable_as<float>(), E * 2 * I, 0.05);
    fill_normal(rng, w.w2_bias->mutable_as<float>(), E * H, 0.05);
  }
  if (spec.with_router) {
    w.router_weight = HostTensor::zeros(DType::F32, {E, H});
    w.correction_bias = HostTensor::zeros(DType::F32, {E});
    fill_normal(rng, w.router_weight->mutable_as<float>(), E * H, 1.0 / std::sqrt(static_cast<double>(H)));
    fill_normal(rng, w.correction_bias->mutable_as<float>(), E, 0.01);
  }
  return w;
}

}  // namespace mxmoe
