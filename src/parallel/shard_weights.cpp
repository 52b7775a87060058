// Cutting one rank's weights out of the full layer, byte for byte (no re-quantisation), reading
// only that rank's rows and columns so the full weights may be views of a mapped checkpoint.
#include <cstring>
#include <string>

#include "formats/mxfp4.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/parallel.hpp"

namespace mxmoe {
namespace {

using Bytes = std::uint8_t;

// Copies rows [row_begin, row_begin + rows) of every one of `outer` blocks of `rows_per_block`
// rows (`row_bytes` each) from src into dst, packed block after block.
void copy_rows(const Bytes* src, Bytes* dst, std::int64_t outer, std::int64_t rows_per_block, std::int64_t row_begin,
               std::int64_t rows, std::int64_t row_bytes) {
  for (std::int64_t o = 0; o < outer; ++o)
    std::memcpy(dst + o * rows * row_bytes, src + (o * rows_per_block + row_begin) * row_bytes,
                static_cast<std::size_t>(rows * row_bytes));
}

// A private copy, so the shard never keeps a mapped checkpoint alive.
HostTensor copy_of(const HostTensor& t) {
  HostTensor out = HostTensor::zeros(t.dtype(), t.shape());
  std::memcpy(out.mutable_data(), t.data(), t.nbytes());
  return out;
}

// The shape and dtype checks of CanonicalMoeWeights::validate without its scan of every scale
// byte, which would read all ranks' bytes; the shard's own validate() scans the rank's scales.
void expect_tensor(const HostTensor& t, const char* name, DType dtype, const Shape& shape) {
  if (t.empty()) fail(ErrorCode::NotFound, std::string("shard: full weights lack tensor '") + name + "'");
  if (t.dtype() != dtype || t.shape() != shape)
    fail(ErrorCode::Shape, std::string("shard: full weights tensor '") + name + "' is " + dtype_name(t.dtype()) + " " +
                               shape_str(t.shape()) + ", expected " + dtype_name(dtype) + " " + shape_str(shape));
}

void expect_full_shapes(const CanonicalMoeWeights& w) {
  const std::int64_t E = w.num_experts, H = w.hidden, I = w.inter;
  if (E <= 0 || H <= 0 || I <= 0 || H % 32 != 0 || I % 32 != 0)
    fail(ErrorCode::Shape, "shard: full weights need positive E and H, I multiples of 32, got E=" + std::to_string(E) +
                               " H=" + std::to_string(H) + " I=" + std::to_string(I));
  expect_tensor(w.w13, "w13", DType::U8, {E, 2 * I, H / 2});
  expect_tensor(w.w13_scale, "w13_scale", DType::U8, {E, 2 * I, H / 32});
  expect_tensor(w.w2, "w2", DType::U8, {E, H, I / 2});
  expect_tensor(w.w2_scale, "w2_scale", DType::U8, {E, H, I / 32});
  if (w.w13_bias) expect_tensor(*w.w13_bias, "w13_bias", DType::F32, {E, 2 * I});
  if (w.w2_bias) expect_tensor(*w.w2_bias, "w2_bias", DType::F32, {E, H});
  if (w.router_weight) expect_tensor(*w.router_weight, "router_weight", DType::F32, {E, H});
  if (w.correction_bias) expect_tensor(*w.correction_bias, "correction_bias", DType::F32, {E});
}

// Sets the E2M1 codes of K indices [begin, end) of one packed row to 0 (the value +0).
void zero_codes(Bytes* row, std::int64_t begin, std::int64_t end) {
  for (std::int64_t k = begin; k < end; ++k) row[k / 2] &= (k % 2) ? Bytes{0x0f} : Bytes{0xf0};
}

CanonicalMoeWeights shard_tensor(const CanonicalMoeWeights& full, const ShardSpec& spec) {
  const TensorSlice s = tensor_slice(full.inter, spec);
  const std::int64_t E = full.num_experts, H = full.hidden, I = full.inter, W = s.window.size();
  const std::int64_t wb = s.window.begin;
  // Local intermediate index j <-> global wb + j; owned local indices are [lo, hi).
  const std::int64_t lo = s.owned.begin - wb, hi = s.owned.end - wb;

  CanonicalMoeWeights w;
  w.num_experts = full.num_experts;
  w.hidden = full.hidden;
  w.inter = static_cast<int>(W);
  w.w13 = HostTensor::zeros(DType::U8, {E, 2 * W, H / 2});  // zero bytes: E2M1 code 0 everywhere
  w.w13_scale = HostTensor::zeros(DType::U8, {E, 2 * W, H / 32});
  w.w2 = HostTensor::zeros(DType::U8, {E, H, W / 2});
  w.w2_scale = HostTensor::zeros(DType::U8, {E, H, W / 32});

  // w13: owned gate rows then owned up rows; rows outside the owned range keep code 0 and get
  // scale 1 (any non-NaN scale would do: 0 x scale = 0).
  const Bytes* src13 = full.w13.as<Bytes>();
  const Bytes* srcs13 = full.w13_scale.as<Bytes>();
  Bytes* dst13 = w.w13.mutable_as<Bytes>();
  Bytes* dsts13 = w.w13_scale.mutable_as<Bytes>();
  std::memset(dsts13, formats::kE8m0One, w.w13_scale.nbytes());
  for (std::int64_t e = 0; e < E; ++e)
    for (int half = 0; half < 2; ++half) {  // 0: gate, 1: up
      const std::int64_t src_row = e * 2 * I + half * I + s.owned.begin;
      const std::int64_t dst_row = e * 2 * W + half * W + lo;
      const std::int64_t rows = hi - lo;
      std::memcpy(dst13 + dst_row * (H / 2), src13 + src_row * (H / 2), static_cast<std::size_t>(rows * (H / 2)));
      std::memcpy(dsts13 + dst_row * (H / 32), srcs13 + src_row * (H / 32), static_cast<std::size_t>(rows * (H / 32)));
    }

  // w2: the window's columns of every row (whole groups, so every scale byte is a global one),
  // then the columns outside the owned range set to code 0.
  copy_rows(full.w2.as<Bytes>(), w.w2.mutable_as<Bytes>(), E * H, I / 2, wb / 2, W / 2, 1);
  copy_rows(full.w2_scale.as<Bytes>(), w.w2_scale.mutable_as<Bytes>(), E * H, I / 32, wb / 32, W / 32, 1);
  Bytes* dst2 = w.w2.mutable_as<Bytes>();
  for (std::int64_t row = 0; row < E * H; ++row) {
    zero_codes(dst2 + row * (W / 2), 0, lo);
    zero_codes(dst2 + row * (W / 2), hi, W);
  }

  if (full.w13_bias) {
    w.w13_bias = HostTensor::zeros(DType::F32, {E, 2 * W});
    const float* src = full.w13_bias->as<float>();
    float* dst = w.w13_bias->mutable_as<float>();
    for (std::int64_t e = 0; e < E; ++e)
      for (int half = 0; half < 2; ++half)
        std::memcpy(dst + e * 2 * W + half * W + lo, src + e * 2 * I + half * I + s.owned.begin,
                    static_cast<std::size_t>(hi - lo) * sizeof(float));
  }
  // The down-projection bias is part of the sum over ranks, so exactly one rank adds it.
  if (full.w2_bias) w.w2_bias = spec.rank == 0 ? copy_of(*full.w2_bias) : HostTensor::zeros(DType::F32, {E, H});
  if (full.router_weight) w.router_weight = copy_of(*full.router_weight);
  if (full.correction_bias) w.correction_bias = copy_of(*full.correction_bias);
  return w;
}

// Experts [r.begin, r.end) of a tensor whose first dimension is the expert.
HostTensor expert_rows(const HostTensor& t, const IndexRange& r) {
  Shape shape = t.shape();
  const std::int64_t per_expert = static_cast<std::int64_t>(t.nbytes()) / shape[0];
  shape[0] = r.size();
  HostTensor out = HostTensor::zeros(t.dtype(), shape);
  std::memcpy(out.mutable_data(), t.as<Bytes>() + r.begin * per_expert, static_cast<std::size_t>(r.size() * per_expert));
  return out;
}

CanonicalMoeWeights shard_expert(const CanonicalMoeWeights& full, const ShardSpec& spec) {
  const IndexRange r = expert_range(full.num_experts, spec);
  CanonicalMoeWeights w;
  w.num_experts = static_cast<int>(r.size());
  w.hidden = full.hidden;
  w.inter = full.inter;
  w.w13 = expert_rows(full.w13, r);
  w.w13_scale = expert_rows(full.w13_scale, r);
  w.w2 = expert_rows(full.w2, r);
  w.w2_scale = expert_rows(full.w2_scale, r);
  if (full.w13_bias) w.w13_bias = expert_rows(*full.w13_bias, r);
  if (full.w2_bias) w.w2_bias = expert_rows(*full.w2_bias, r);
  return w;
}

}  // namespace

CanonicalMoeWeights shard_weights(const CanonicalMoeWeights& full, const ShardSpec& spec) {
  expect_full_shapes(full);
  validate_shard_spec(spec, full.num_experts, full.inter);
  CanonicalMoeWeights w = spec.world == 1                 ? full  // the whole layer: share the tensors
                          : spec.kind == ShardKind::Tensor ? shard_tensor(full, spec)
                                                           : shard_expert(full, spec);
  w.validate();
  return w;
}

}  // namespace mxmoe
