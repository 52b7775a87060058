// Quantizing an unquantized MoE layer (bf16/f16/f32 experts) to canonical MXFP4 by the OCP rule,
// one row at a time straight from the mapped file.
#include <algorithm>
#include <cmath>
#include <vector>

#include "formats/mxfp4.hpp"
#include "formats/nvfp4.hpp"
#include "layout/alias_table.hpp"
#include "layout/completeness.hpp"
#include "layout/layer_dtypes.hpp"
#include "layout/tensor_convert.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {
namespace {

using layout::Resolved;
using layout::Role;

// Quantizes `rows` rows of K floats into packed codes and block scales; element (r, k) is flat element
// first + r * row_step + k * k_step of `src` (k_step 1 for row-major rows; the transposed, interleaved
// gpt-oss tensors step otherwise). NaN/Inf inputs are refused by name and index.
// MXFP4 (`global` null): E8M0 scales per 32 by the OCP rule, row by row. NVFP4: the rows are one matrix
// (one expert's gate, up or down): its global scale amax / (6 x 448) is written to *global, then UE4M3
// scales per 16 by ModelOpt's rule (formats/nvfp4.hpp).
void quantize_rows(const HostTensor& src, const std::string& name, std::int64_t first, std::int64_t rows, std::int64_t K,
                   std::uint8_t* packed, std::uint8_t* scales, std::int64_t row_step = -1, std::int64_t k_step = 1,
                   float* dense_rows = nullptr, float* global = nullptr) {
  if (row_step < 0) row_step = K;
  std::vector<float> row(static_cast<std::size_t>(K));
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(K));
  auto load_row = [&](std::int64_t r) {
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t i = first + r * row_step + k * k_step;
      row[k] = layout::load_float(src, i);
      if (!std::isfinite(row[k]))
        fail(ErrorCode::Format, "tensor '" + name + "': value at index " + layout::index_str(src.shape(), i) + " is not finite");
    }
  };
  float g = 0.0f;
  if (global) {  // the matrix's amax first
    float amax = 0.0f;
    for (std::int64_t r = 0; r < rows; ++r) {
      load_row(r);
      for (float v : row) amax = std::max(amax, std::fabs(v));
    }
    *global = g = formats::nvfp4_global_scale(amax);
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    load_row(r);
    if (dense_rows) std::copy(row.begin(), row.end(), dense_rows + r * K);  // the unquantized row, for verify --source
    if (global) formats::nvfp4_quantize(row.data(), K, g, codes.data(), scales + r * K / 16);
    else formats::mxfp4_quantize(row.data(), static_cast<int>(K), codes.data(), scales + r * K / 32);
    formats::pack_codes(codes.data(), K, packed + r * K / 2);
  }
}

class DenseQuantizer {
 public:
  DenseQuantizer(const Checkpoint& ckpt, const MoeLayerRef& ref, reference::DenseExpertWeights* dense, const WeightFormat& format)
      : ckpt_(ckpt), ref_(ref), rule_(layout::layout_rule(ref.layout)), dense_(dense), nv_(format.nvfp4()), G_(format.group_size) {
    out_.ref = ref;
    validate_layer_formats(format);
    // NVFP4 activations: the config's dtype (fp16 when it says float16), unless the caller asked for fp16.
    out_.weights.format = nv_ ? WeightFormat::nvfp4_with(format.activation_dtype == DType::F16 ? DType::F16 : layout::config_activation_dtype(ckpt))
                              : format;
  }

  LoadedMoeLayer run() {
    if (ref_.layout == MoeLayout::DensePerExpert) per_expert();
    else if (ref_.layout == MoeLayout::DenseFused) fused();
    else if (ref_.layout == MoeLayout::DenseGptOss) gpt_oss();
    else fail(ErrorCode::InvalidArgument, "layer " + std::to_string(ref_.layer) + " is already MXFP4 (" + moe_layout_name(ref_.layout) + ")");
    router();
    if (nv_) {
      const std::int64_t E = out_.weights.num_experts;
      out_.weights.w13_global_scale = HostTensor::zeros(DType::F32, {E, 2});
      out_.weights.w2_global_scale = HostTensor::zeros(DType::F32, {E});
      std::copy(g13_.begin(), g13_.end(), out_.weights.w13_global_scale->mutable_as<float>());
      std::copy(g2_.begin(), g2_.end(), out_.weights.w2_global_scale->mutable_as<float>());
    }
    out_.scale_format = nv_ ? "NVFP4: UE4M3 per 16 + fp32 global scales (quantized by mxmoe, ModelOpt's rule)" : "E8M0 (quantized by mxmoe)";
    out_.weights.validate();
    return std::move(out_);
  }

 private:
  // quantize_rows, also keeping the float rows in dense_ when asked: canonical element j of w13 (w2) is
  // packed byte j / 2, so a packed destination gives the float destination.
  // `global`: NVFP4's global scale of this matrix (ignored for MXFP4).
  void quantize(const HostTensor& src, const std::string& name, std::int64_t first, std::int64_t rows, std::int64_t K,
                std::uint8_t* packed, std::uint8_t* scales, float* global, std::int64_t row_step = -1, std::int64_t k_step = 1) {
    float* rows_out = nullptr;
    if (dense_) {
      const auto* b13 = out_.weights.w13.as<std::uint8_t>();
      rows_out = packed >= b13 && packed < b13 + out_.weights.w13.nbytes()
                     ? dense_->w13.mutable_as<float>() + (packed - b13) * 2
                     : dense_->w2.mutable_as<float>() + (packed - out_.weights.w2.as<std::uint8_t>()) * 2;
    }
    quantize_rows(src, name, first, rows, K, packed, scales, row_step, k_step, rows_out, nv_ ? global : nullptr);
  }

  std::optional<Resolved> find(Role role, int expert = 0) {
    return layout::resolve_or_fail(ckpt_, ref_.module_prefix, layout::rule_for(rule_, role), expert);
  }

  void record(Role role, const Resolved& r, bool per_expert) {
    const TensorInfo& info = ckpt_.info(r.name);
    const std::string shown = per_expert ? layout::tensor_name(ref_.module_prefix, layout::Scope::Experts, r.alias, 0) : r.name;
    out_.matches.push_back({layout::role_name(role), shown, r.alias, info.dtype_name, info.shape, false});
  }

  HostTensor float_view(const Resolved& r, const Shape& expected, const char* what) {
    HostTensor t = ckpt_.view(r.name);
    if (t.dtype() != DType::BF16 && t.dtype() != DType::F16 && t.dtype() != DType::F32)
      fail(ErrorCode::DType, "tensor '" + r.name + "' has dtype " + dtype_name(t.dtype()) + ", expected BF16, F16 or F32");
    layout::expect_shape(r.name, t.shape(), expected, what);
    return t;
  }

  void allocate(const std::string& name, std::int64_t E, std::int64_t H, std::int64_t I) {
    if (E <= 0 || H <= 0 || I <= 0 || H % G_ || I % G_)
      fail(ErrorCode::Shape, "tensor '" + name + "': E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" + std::to_string(I) +
                                 ": need E > 0 and H, I positive multiples of " + std::to_string(G_));
    auto& w = out_.weights;
    w.num_experts = static_cast<int>(E);
    w.hidden = static_cast<int>(H);
    w.inter = static_cast<int>(I);
    w.w13 = HostTensor::zeros(DType::U8, {E, 2 * I, H / 2});
    w.w13_scale = HostTensor::zeros(DType::U8, {E, 2 * I, H / G_});
    w.w2 = HostTensor::zeros(DType::U8, {E, H, I / 2});
    w.w2_scale = HostTensor::zeros(DType::U8, {E, H, I / G_});
    g13_.assign(static_cast<std::size_t>(2 * E), 1.0f);
    g2_.assign(static_cast<std::size_t>(E), 1.0f);
    if (dense_) {
      dense_->w13 = HostTensor::zeros(DType::F32, {E, 2 * I, H});
      dense_->w2 = HostTensor::zeros(DType::F32, {E, H, I});
    }
  }

  void per_expert() {
    const std::int64_t E = ref_.num_experts;
    const Resolved g0 = *find(Role::Gate, 0);
    const Shape s0 = ckpt_.info(g0.name).shape;
    if (s0.size() != 2) fail(ErrorCode::Shape, "tensor '" + g0.name + "' has shape " + shape_str(s0) + ", expected [I, H]");
    const std::int64_t I = s0[0], H = s0[1];
    // Shapes of every expert first, so the allocation is backed by bytes the file really holds.
    for (int e = 0; e < E; ++e) {
      layout::expect_shape(find(Role::Gate, e)->name, ckpt_.info(find(Role::Gate, e)->name).shape, {I, H}, "gate");
      layout::expect_shape(find(Role::Up, e)->name, ckpt_.info(find(Role::Up, e)->name).shape, {I, H}, "up");
      layout::expect_shape(find(Role::Down, e)->name, ckpt_.info(find(Role::Down, e)->name).shape, {H, I}, "down");
    }
    allocate(g0.name, E, H, I);
    auto& w = out_.weights;
    for (int e = 0; e < E; ++e) {
      const Resolved g = *find(Role::Gate, e), u = *find(Role::Up, e), d = *find(Role::Down, e);
      quantize(float_view(g, {I, H}, "gate"), g.name, 0, I, H, w.w13.mutable_as<std::uint8_t>() + e * 2 * I * H / 2,
                    w.w13_scale.mutable_as<std::uint8_t>() + e * 2 * I * H / G_, &g13_[2 * e]);
      quantize(float_view(u, {I, H}, "up"), u.name, 0, I, H, w.w13.mutable_as<std::uint8_t>() + (e * 2 * I + I) * H / 2,
                    w.w13_scale.mutable_as<std::uint8_t>() + (e * 2 * I + I) * H / G_, &g13_[2 * e + 1]);
      quantize(float_view(d, {H, I}, "down"), d.name, 0, H, I, w.w2.mutable_as<std::uint8_t>() + e * H * I / 2,
                    w.w2_scale.mutable_as<std::uint8_t>() + e * H * I / G_, &g2_[e]);
      if (e == 0) {
        record(Role::Gate, g, true);
        record(Role::Up, u, true);
        record(Role::Down, d, true);
      }
    }
  }

  void fused() {
    const Resolved r13 = *find(Role::W13);
    const Shape s13 = ckpt_.info(r13.name).shape;
    if (s13.size() != 3 || s13[1] % 2) fail(ErrorCode::Shape, "tensor '" + r13.name + "' has shape " + shape_str(s13) + ", expected [E, 2I, H]");
    const std::int64_t E = s13[0], I = s13[1] / 2, H = s13[2];
    const Resolved r2 = *find(Role::W2);
    const HostTensor w13 = float_view(r13, {E, 2 * I, H}, "w13");
    const HostTensor w2 = float_view(r2, {E, H, I}, "w2");
    allocate(r13.name, E, H, I);
    auto& w = out_.weights;
    // One matrix at a time (gate and up of each expert apart): NVFP4 gives each its global scale; for
    // MXFP4, whose scales are per row, the split changes nothing.
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t half = 0; half < 2; ++half)
        quantize(w13, r13.name, (e * 2 * I + half * I) * H, I, H, w.w13.mutable_as<std::uint8_t>() + (e * 2 * I + half * I) * H / 2,
                 w.w13_scale.mutable_as<std::uint8_t>() + (e * 2 * I + half * I) * H / G_, &g13_[static_cast<std::size_t>(2 * e + half)]);
    for (std::int64_t e = 0; e < E; ++e)
      quantize(w2, r2.name, e * H * I, H, I, w.w2.mutable_as<std::uint8_t>() + e * H * I / 2, w.w2_scale.mutable_as<std::uint8_t>() + e * H * I / G_,
               &g2_[static_cast<std::size_t>(e)]);
    record(Role::W13, r13, false);
    record(Role::W2, r2, false);
    if (auto b = find(Role::W13Bias)) {
      layout::expect_shape(b->name, ckpt_.info(b->name).shape, {E, 2 * I}, "w13 bias");
      w.w13_bias = layout::to_f32(ckpt_, b->name);
      record(Role::W13Bias, *b, false);
    }
    if (auto b = find(Role::W2Bias)) {
      layout::expect_shape(b->name, ckpt_.info(b->name).shape, {E, H}, "w2 bias");
      w.w2_bias = layout::to_f32(ckpt_, b->name);
      record(Role::W2Bias, *b, false);
    }
  }

  // Hugging Face bf16 gpt-oss (alias_table.cpp): canonical gate row r of expert e is column 2r of
  // gate_up_proj[e] ([H, 2I]), up row r is column 2r + 1; canonical w2 row h is column h of down_proj[e]
  // ([I, H]). The bias is de-interleaved the same way; down_proj_bias is already canonical.
  void gpt_oss() {
    const Resolved r13 = *find(Role::W13);
    const Shape s13 = ckpt_.info(r13.name).shape;
    if (s13.size() != 3 || s13[2] % 2)
      fail(ErrorCode::Shape, "tensor '" + r13.name + "' has shape " + shape_str(s13) + ", expected [E, H, 2I]");
    const std::int64_t E = s13[0], H = s13[1], I = s13[2] / 2;
    const Resolved r2 = *find(Role::W2);
    const HostTensor w13 = float_view(r13, {E, H, 2 * I}, "gate_up_proj");
    const HostTensor w2 = float_view(r2, {E, I, H}, "down_proj");
    allocate(r13.name, E, H, I);
    auto& w = out_.weights;
    for (std::int64_t e = 0; e < E; ++e) {
      const std::int64_t base13 = e * H * 2 * I;
      for (int half = 0; half < 2; ++half)  // 0: gate (even columns), 1: up (odd columns)
        quantize(w13, r13.name, base13 + half, I, H, w.w13.mutable_as<std::uint8_t>() + (e * 2 * I + half * I) * H / 2,
                      w.w13_scale.mutable_as<std::uint8_t>() + (e * 2 * I + half * I) * H / G_, &g13_[2 * e + half], 2, 2 * I);
      quantize(w2, r2.name, e * I * H, H, I, w.w2.mutable_as<std::uint8_t>() + e * H * I / 2,
                    w.w2_scale.mutable_as<std::uint8_t>() + e * H * I / G_, &g2_[e], 1, H);
    }
    record(Role::W13, r13, false);
    record(Role::W2, r2, false);
    if (auto b = find(Role::W13Bias)) {
      layout::expect_shape(b->name, ckpt_.info(b->name).shape, {E, 2 * I}, "gate_up_proj bias");
      const HostTensor src = layout::to_f32(ckpt_, b->name);
      w.w13_bias = HostTensor::zeros(DType::F32, {E, 2 * I});
      for (std::int64_t e = 0; e < E; ++e)
        for (std::int64_t r = 0; r < 2 * I; ++r)
          w.w13_bias->mutable_as<float>()[e * 2 * I + (r % 2) * I + r / 2] = src.as<float>()[e * 2 * I + r];
      record(Role::W13Bias, *b, false);
    }
    if (auto b = find(Role::W2Bias)) {
      layout::expect_shape(b->name, ckpt_.info(b->name).shape, {E, H}, "down_proj bias");
      w.w2_bias = layout::to_f32(ckpt_, b->name);
      record(Role::W2Bias, *b, false);
    }
  }

  void router() {
    const std::int64_t E = out_.weights.num_experts, H = out_.weights.hidden;
    if (auto r = find(Role::RouterWeight)) {
      layout::expect_shape(r->name, ckpt_.info(r->name).shape, {E, H}, "router weight");
      out_.weights.router_weight = layout::to_f32(ckpt_, r->name);
      record(Role::RouterWeight, *r, false);
    }
    if (ref_.layout == MoeLayout::DenseGptOss) {  // a logit bias, not a correction bias (checkpoint.hpp)
      if (auto r = find(Role::RouterLogitBias)) {
        layout::expect_shape(r->name, ckpt_.info(r->name).shape, {E}, "router bias");
        out_.router_logit_bias = layout::to_f32(ckpt_, r->name);
        record(Role::RouterLogitBias, *r, false);
      }
      return;
    }
    if (auto r = find(Role::CorrectionBias)) {
      layout::expect_shape(r->name, ckpt_.info(r->name).shape, {E}, "correction bias");
      out_.weights.correction_bias = layout::to_f32(ckpt_, r->name);
      record(Role::CorrectionBias, *r, false);
    }
  }

  const Checkpoint& ckpt_;
  const MoeLayerRef& ref_;
  const layout::LayoutRule& rule_;
  LoadedMoeLayer out_;
  reference::DenseExpertWeights* dense_;
  bool nv_;                             // NVFP4 output
  std::int64_t G_;                      // its group: 32 or 16
  std::vector<float> g13_, g2_;         // NVFP4 global scales, [E, 2] and [E]
};

}  // namespace

LoadedMoeLayer quantize_moe_layer(const Checkpoint& ckpt, const MoeLayerRef& ref, reference::DenseExpertWeights* dense,
                                  const WeightFormat& format) {
  layout::check_layer_dtypes(ckpt, ref);
  return DenseQuantizer(ckpt, ref, dense, format).run();
}

}  // namespace mxmoe
