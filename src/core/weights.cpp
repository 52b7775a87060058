#include "mxmoe/weights.hpp"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "core/random.hpp"
#include "formats/mxfp4.hpp"
#include "formats/nvfp4.hpp"
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

// "-1.5" for E2M1 code 11.
std::string e2m1_str(std::uint8_t code) {
  static const char* const magnitude[8] = {"0", "0.5", "1", "1.5", "2", "3", "4", "6"};
  return std::string(code & 8u ? "-" : "") + magnitude[code & 7u];
}

// MXFP4: every E8M0 byte 0x00..0xFE is a scale, but a block whose scale (253, 254) times one of its
// codes is infinite in float32 would turn the forward into NaN; the first such element is named.
void expect_finite_mxfp4(const HostTensor& packed, const HostTensor& scales, const char* name, std::int64_t rows_per_expert, std::int64_t k) {
  const std::int64_t i = formats::first_e8m0_overflow(packed.as<std::uint8_t>(), scales.as<std::uint8_t>(), packed.dim(0) * rows_per_expert, k);
  if (i < 0) return;
  const std::int64_t row = i / k, group = (i % k) / 32, flat = row * (k / 32) + group;
  const std::uint8_t b = scales.as<std::uint8_t>()[flat];
  const std::uint8_t code = formats::nibble_at(packed.as<std::uint8_t>(), i);
  fail(ErrorCode::Format, std::string("canonical weights: tensor '") + name + "' at flat index " + std::to_string(flat) + " (expert " +
                              std::to_string(row / rows_per_expert) + ", row " + std::to_string(row % rows_per_expert) + ", group " +
                              std::to_string(group) + "): E8M0 byte " + std::to_string(b) + " (2^" + std::to_string(b - 127) +
                              ") times E2M1 code " + std::to_string(code) + " (" + e2m1_str(code) + ") is infinite in float32");
}

// NVFP4 block scales are UE4M3: E4M3 with the sign bit clear; 0x7F is NaN.
void expect_ue4m3(const HostTensor& t, const char* name) {
  const auto* p = t.as<std::uint8_t>();
  const std::int64_t n = t.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    if (p[i] == formats::kUe4m3Nan)
      fail(ErrorCode::Format, std::string("canonical weights: tensor '") + name + "' holds the UE4M3 NaN byte 0x7F at flat index " + std::to_string(i));
    if (p[i] & 0x80u)
      fail(ErrorCode::Format, std::string("canonical weights: tensor '") + name + "' holds byte " + std::to_string(p[i]) + " at flat index " +
                                  std::to_string(i) + ", whose sign bit is set: NVFP4 block scales are unsigned (UE4M3)");
  }
}

void expect_global_scales(const std::optional<HostTensor>& t, const char* name, const Shape& shape) {
  if (!t)
    fail(ErrorCode::NotFound, std::string("canonical weights: NVFP4 weights (group 16) need tensor '") + name + "' (F32 " + shape_str(shape) +
                                  "), the global scales of their matrices");
  expect(*t, name, DType::F32, shape);
  const float* p = t->as<float>();
  for (std::int64_t i = 0; i < t->numel(); ++i)
    if (!(std::isfinite(p[i]) && p[i] > 0.0f))
      fail(ErrorCode::Format, std::string("canonical weights: tensor '") + name + "' at flat index " + std::to_string(i) + " is " +
                                  std::to_string(p[i]) + ": a global scale must be finite and positive");
}

}  // namespace

void CanonicalMoeWeights::validate() const {
  validate_layer_formats(format);
  const std::int64_t E = num_experts, H = hidden, I = inter, G = format.group_size;
  const bool nv = format.nvfp4();
  if (E <= 0 || H <= 0 || I <= 0)
    fail(ErrorCode::Shape, "canonical weights: E, H, I must be positive, got E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" + std::to_string(I));
  if (H % G != 0 || I % G != 0)
    fail(ErrorCode::Shape, std::string("canonical weights: H and I must be multiples of the ") + (nv ? "NVFP4 group (16)" : "MXFP4 group (32)") +
                               ", got H=" + std::to_string(H) + " I=" + std::to_string(I));
  expect(w13, "w13", DType::U8, {E, 2 * I, H / 2});
  expect(w13_scale, "w13_scale", DType::U8, {E, 2 * I, H / G});
  expect(w2, "w2", DType::U8, {E, H, I / 2});
  expect(w2_scale, "w2_scale", DType::U8, {E, H, I / G});
  if (w13_bias) expect(*w13_bias, "w13_bias", DType::F32, {E, 2 * I});
  if (w2_bias) expect(*w2_bias, "w2_bias", DType::F32, {E, H});
  if (router_weight) expect(*router_weight, "router_weight", DType::F32, {E, H});
  if (correction_bias) expect(*correction_bias, "correction_bias", DType::F32, {E});
  if (nv) {
    expect_ue4m3(w13_scale, "w13_scale");
    expect_ue4m3(w2_scale, "w2_scale");
    expect_global_scales(w13_global_scale, "w13_global_scale", {E, 2});
    expect_global_scales(w2_global_scale, "w2_global_scale", {E});
    return;
  }
  for (const auto* g : {&w13_global_scale, &w2_global_scale})
    if (g->has_value())
      fail(ErrorCode::InvalidArgument, std::string("canonical weights: MXFP4 weights (group 32, E8M0 scales) carry no global scales, but '") +
                                           (g == &w13_global_scale ? "w13_global_scale" : "w2_global_scale") + "' is set");
  expect_no_nan_scale(w13_scale, "w13_scale");
  expect_no_nan_scale(w2_scale, "w2_scale");
  expect_finite_mxfp4(w13, w13_scale, "w13_scale", 2 * I, H);
  expect_finite_mxfp4(w2, w2_scale, "w2_scale", H, I);
}

std::size_t CanonicalMoeWeights::expert_weight_bytes() const {
  const std::size_t H = hidden, I = inter, G = format.nvfp4() ? 16 : 32;
  // Packed E2M1 (half a byte per weight), one scale byte per group, and NVFP4's three fp32 global
  // scales (gate, up, down).
  return 3 * H * I / 2 + 3 * H * I / G + (format.nvfp4() ? 3 * sizeof(float) : 0);
}

namespace {

// Random E2M1 codes, uniform over the 16: eight packed bytes (16 codes) per draw.
void fill_codes(SplitMix64& rng, std::uint8_t* packed, std::int64_t bytes) {
  for (std::int64_t i = 0; i < bytes; i += 8) {
    std::uint64_t r = rng.next();
    for (int b = 0; b < 8 && i + b < bytes; ++b) packed[i + b] = static_cast<std::uint8_t>(r >> (8 * b));
  }
}

// Random E2M1 codes under E8M0 scale bytes near `base`: the rms of a uniform
// code is about 2.93, so base = 127 + round(log2(std / 2.93)) gives roughly the asked std.
void fill_mxfp4(SplitMix64& rng, std::uint8_t* packed, std::uint8_t* scales, std::int64_t rows, std::int64_t k, int base) {
  fill_codes(rng, packed, rows * k / 2);
  for (std::int64_t i = 0; i < rows * k / 32; ++i)
    scales[i] = static_cast<std::uint8_t>(base - 1 + static_cast<int>(rng.next() % 3));
}

void fill_normal(SplitMix64& rng, float* out, std::int64_t n, double std) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(rng.normal() * std);
}

// NVFP4: the same random codes under UE4M3 block scales, and a global scale per matrix drawn as
// 2^uniform(-1, 1). The block scales sit at ue4m3(std / (2.93 g)) -1..+1 steps, so a weight
// e2m1 x ue4m3 x g has roughly the asked std (for small stds the scales are UE4M3 subnormals, which
// the kernels must handle as well as normals).
void fill_nvfp4(SplitMix64& rng, std::uint8_t* packed, std::uint8_t* scales, float* global, std::int64_t rows, std::int64_t k, double std) {
  fill_codes(rng, packed, rows * k / 2);
  *global = static_cast<float>(std::exp2(2.0 * rng.uniform() - 1.0));
  const int base = formats::ue4m3_encode(static_cast<float>(std / (2.93 * *global)));
  for (std::int64_t i = 0; i < rows * k / 16; ++i)
    scales[i] = static_cast<std::uint8_t>(std::clamp(base - 1 + static_cast<int>(rng.next() % 3), 1, static_cast<int>(formats::kUe4m3Max)));
}

}  // namespace

CanonicalMoeWeights make_synthetic_weights(const SyntheticSpec& spec) {
  validate_layer_formats(spec.format);
  CanonicalMoeWeights w;
  w.num_experts = spec.num_experts;
  w.hidden = spec.hidden;
  w.inter = spec.inter;
  w.format = spec.format;
  const std::int64_t E = spec.num_experts, H = spec.hidden, I = spec.inter, G = spec.format.group_size;
  const bool nv = spec.format.nvfp4();
  if (E <= 0 || H <= 0 || I <= 0 || H % G || I % G)
    fail(ErrorCode::Shape, "synthetic weights: need positive E and H, I multiples of " + std::to_string(G) + "; got E=" + std::to_string(E) +
                               " H=" + std::to_string(H) + " I=" + std::to_string(I));
  if (!(spec.weight_std > 0.0f)) fail(ErrorCode::InvalidArgument, "synthetic weights: weight_std must be positive");
  w.w13 = HostTensor::zeros(DType::U8, {E, 2 * I, H / 2});
  w.w13_scale = HostTensor::zeros(DType::U8, {E, 2 * I, H / G});
  w.w2 = HostTensor::zeros(DType::U8, {E, H, I / 2});
  w.w2_scale = HostTensor::zeros(DType::U8, {E, H, I / G});
  if (nv) {
    w.w13_global_scale = HostTensor::zeros(DType::F32, {E, 2});
    w.w2_global_scale = HostTensor::zeros(DType::F32, {E});
  }
  const int base = 127 + static_cast<int>(std::lround(std::log2(spec.weight_std / 2.93)));

  auto* w13 = w.w13.mutable_as<std::uint8_t>();
  auto* s13 = w.w13_scale.mutable_as<std::uint8_t>();
  auto* w2 = w.w2.mutable_as<std::uint8_t>();
  auto* s2 = w.w2_scale.mutable_as<std::uint8_t>();
  float* g13 = nv ? w.w13_global_scale->mutable_as<float>() : nullptr;
  float* g2 = nv ? w.w2_global_scale->mutable_as<float>() : nullptr;
  const unsigned threads = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 32u));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::int64_t e = t; e < E; e += threads) {
        SplitMix64 rng(stream_seed(spec.seed, static_cast<std::uint64_t>(e)));
        if (!nv) {
          fill_mxfp4(rng, w13 + e * 2 * I * H / 2, s13 + e * 2 * I * H / 32, 2 * I, H, base);
          fill_mxfp4(rng, w2 + e * H * I / 2, s2 + e * H * I / 32, H, I, base);
          continue;
        }
        // Gate rows, up rows and w2 are three matrices, each with its own global scale.
        fill_nvfp4(rng, w13 + e * 2 * I * H / 2, s13 + e * 2 * I * H / 16, g13 + 2 * e, I, H, spec.weight_std);
        fill_nvfp4(rng, w13 + (e * 2 * I + I) * H / 2, s13 + (e * 2 * I + I) * H / 16, g13 + 2 * e + 1, I, H, spec.weight_std);
        fill_nvfp4(rng, w2 + e * H * I / 2, s2 + e * H * I / 16, g2 + e, H, I, spec.weight_std);
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
