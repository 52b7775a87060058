// Loading a quantized MoE layer (dsv4, fused, modelopt or gpt-oss names) into canonical weights: views
// of the mapped file where the bytes already match, copies where rows must be stacked or
// de-interleaved. The scales tell the format: F8_E4M3 block scales (or any with weight_scale_2 global
// scales next to them) are NVFP4, group 16; everything else MXFP4, group 32.
#include <cmath>
#include <cstring>

#include "formats/mxfp4.hpp"
#include "layout/alias_table.hpp"
#include "layout/completeness.hpp"
#include "layout/layer_dtypes.hpp"
#include "layout/tensor_convert.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {
namespace {

using layout::Resolved;
using layout::Role;

class Mxfp4Loader {
 public:
  Mxfp4Loader(const Checkpoint& ckpt, const MoeLayerRef& ref) : ckpt_(ckpt), ref_(ref), rule_(layout::layout_rule(ref.layout)) {
    out_.ref = ref;
  }

  LoadedMoeLayer run() {
    switch (ref_.layout) {
      case MoeLayout::DeepSeekV4:
      case MoeLayout::ModelOpt:
        detect_format(Role::GateScale, Role::GateGlobal);
        load_per_expert();
        break;
      case MoeLayout::Fused:
        detect_format(Role::W13Scale, Role::W13Global);
        load_fused();
        break;
      case MoeLayout::GptOss:
        detect_format(Role::W13Scale, Role::W13Scale);
        if (nv_) fail(ErrorCode::Unsupported, "tensor '" + find(Role::W13Scale)->name + "' holds F8_E4M3 scales: the gpt-oss layout is MXFP4 only");
        load_gpt_oss();
        break;
      default:
        fail(ErrorCode::Unsupported, "layer " + std::to_string(ref_.layer) + " ('" + ref_.module_prefix + "experts.') is " +
                                         moe_layout_name(ref_.layout) + ", not MXFP4: run `mxmoe quantize` first");
    }
    load_router();
    // Activation scales (input_scale) are accepted and ignored: the activations stay bf16/fp16 (W4A16).
    for (const Role r : {Role::W13InputScale, Role::W2InputScale, Role::GateInputScale, Role::UpInputScale, Role::DownInputScale})
      for (const auto& t : rule_.tensors)
        if (t.role == r)
          if (auto found = layout::resolve(ckpt_, ref_.module_prefix, t, 0)) record(r, *found, false);
    if (nv_) out_.scale_format = "NVFP4: UE4M3 per 16 (F8_E4M3) + fp32 global scales per matrix, " +
                                 std::string(out_.weights.format.activation_dtype == DType::F16 ? "fp16" : "bf16") + " activations";
    else check_finite_blocks();
    if (!nv_) out_.scale_format = converted_ ? "float (exact powers of two, converted to E8M0)" : "E8M0";
    out_.weights.validate();
    return std::move(out_);
  }

 private:
  std::optional<Resolved> find(Role role, int expert = 0) {
    return layout::resolve_or_fail(ckpt_, ref_.module_prefix, layout::rule_for(rule_, role), expert);
  }

  void record(Role role, const Resolved& r, bool zero_copy) {
    const auto& rule = layout::rule_for(rule_, role);
    const TensorInfo& info = ckpt_.info(r.name);
    const std::string shown = rule.scope == layout::Scope::PerExpert
                                  ? layout::tensor_name(ref_.module_prefix, layout::Scope::Experts, r.alias, 0)
                                  : r.name;
    out_.matches.push_back({layout::role_name(role), shown, r.alias, info.dtype_name, info.shape, zero_copy});
  }

  // NVFP4 when the first scale tensor is F8_E4M3 or a global scale ("weight_scale_2") is next to it.
  void detect_format(Role scale_role, Role global_role) {
    const Resolved s = *find(scale_role);
    const bool e4m3 = ckpt_.info(s.name).dtype_name == "F8_E4M3";
    nv_ = e4m3 || (global_role != scale_role && layout::resolve(ckpt_, ref_.module_prefix, layout::rule_for(rule_, global_role)).has_value());
    G_ = nv_ ? 16 : 32;
    if (nv_) out_.weights.format = WeightFormat::nvfp4_with(layout::config_activation_dtype(ckpt_));
  }

  void set_dims(const std::string& name, std::int64_t E, std::int64_t H, std::int64_t I) {
    if (E <= 0 || H <= 0 || I <= 0 || H % G_ || I % G_)
      fail(ErrorCode::Shape, "tensor '" + name + "': E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" + std::to_string(I) +
                                 ": need E > 0 and H, I positive multiples of " + std::to_string(G_) + (nv_ ? " (NVFP4)" : ""));
    if (ref_.num_experts != E)
      fail(ErrorCode::Shape, "tensor '" + name + "' holds " + std::to_string(E) + " experts, but the layer's names count " +
                                 std::to_string(ref_.num_experts));
    out_.weights.num_experts = static_cast<int>(E);
    out_.weights.hidden = static_cast<int>(H);
    out_.weights.inter = static_cast<int>(I);
  }

  HostTensor scales(Role role, const Shape& expected) {
    const Resolved r = *find(role);
    layout::expect_shape(r.name, ckpt_.info(r.name).shape, expected, layout::role_name(role));
    if (nv_) {
      HostTensor t = layout::ue4m3_scales(ckpt_, r.name);
      record(role, r, true);
      return t;
    }
    bool zero_copy = false;
    HostTensor t = layout::e8m0_scales(ckpt_, r.name, &converted_, &zero_copy);
    record(role, r, zero_copy);
    return t;
  }

  std::optional<HostTensor> f32(Role role, const Shape& expected) {
    auto r = find(role);
    if (!r) return std::nullopt;
    layout::expect_shape(r->name, ckpt_.info(r->name).shape, expected, layout::role_name(role));
    record(role, *r, false);
    return layout::to_f32(ckpt_, r->name);
  }

  void load_fused() {
    const Resolved w13 = *find(Role::W13);
    const Shape l13 = layout::packed_logical_shape(ckpt_.info(w13.name));
    if (l13.size() != 3 || l13[1] % 2)
      fail(ErrorCode::Shape, "tensor '" + w13.name + "' has (logical) shape " + shape_str(l13) + ", expected [E, 2I, H]");
    const std::int64_t E = l13[0], I = l13[1] / 2, H = l13[2];
    set_dims(w13.name, E, H, I);
    auto& w = out_.weights;
    w.w13 = layout::packed_view(ckpt_, w13.name, l13);
    record(Role::W13, w13, true);
    const Resolved w2 = *find(Role::W2);
    const Shape l2 = layout::packed_logical_shape(ckpt_.info(w2.name));
    layout::expect_shape(w2.name, l2, {E, H, I}, "w2, logical elements");
    w.w2 = layout::packed_view(ckpt_, w2.name, l2);
    record(Role::W2, w2, true);
    w.w13_scale = scales(Role::W13Scale, {E, 2 * I, H / G_});
    w.w2_scale = scales(Role::W2Scale, {E, H, I / G_});
    if (nv_) {
      // w13_weight_scale_2: [E, 2] (gate, up) or [E] (one for both, as engines that merged them store).
      const Resolved g13 = require_global(Role::W13Global, Role::W13Scale);
      const Shape s13 = ckpt_.info(g13.name).shape;
      if (s13 != Shape{E, 2} && s13 != Shape{E})
        fail(ErrorCode::Shape, "tensor '" + g13.name + "' (w13_global_scale) has shape " + shape_str(s13) + ", expected [" +
                                   std::to_string(E) + ", 2] (gate, up) or [" + std::to_string(E) + "]");
      const HostTensor v13 = global_values(g13, Role::W13Global);
      w.w13_global_scale = HostTensor::zeros(DType::F32, {E, 2});
      for (std::int64_t e = 0; e < E; ++e)
        for (int c = 0; c < 2; ++c) w.w13_global_scale->mutable_as<float>()[2 * e + c] = v13.as<float>()[s13.size() == 2 ? 2 * e + c : e];
      const Resolved g2 = require_global(Role::W2Global, Role::W2Scale);
      layout::expect_shape(g2.name, ckpt_.info(g2.name).shape, {E}, "w2_global_scale");
      w.w2_global_scale = global_values(g2, Role::W2Global);
    }
    w.w13_bias = f32(Role::W13Bias, {E, 2 * I});
    w.w2_bias = f32(Role::W2Bias, {E, H});
  }

  // NVFP4's global scale tensor for `role`: a missing one is named (the scales next to it say NVFP4).
  Resolved require_global(Role role, Role scale_role, int expert = 0) {
    auto r = layout::resolve(ckpt_, ref_.module_prefix, layout::rule_for(rule_, role), expert);
    if (r) return *r;
    const auto& rule = layout::rule_for(rule_, role);
    fail(ErrorCode::NotFound, "checkpoint '" + ckpt_.path() + "': missing tensor '" +
                                  layout::tensor_name(ref_.module_prefix, rule.scope, rule.aliases.front(), expert) + "' for " +
                                  layout::role_name(role) + ": the NVFP4 block scales '" + find(scale_role, expert)->name +
                                  "' need their fp32 global scale (ModelOpt's weight_scale_2)");
  }

  // Global scales as F32, each finite and positive (named by tensor and index otherwise).
  HostTensor global_values(const Resolved& r, Role role) {
    HostTensor t = layout::to_f32(ckpt_, r.name);
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const float v = t.as<float>()[i];
      if (!(std::isfinite(v) && v > 0.0f))
        fail(ErrorCode::Format, "tensor '" + r.name + "': global scale " + std::to_string(v) + " at index " + layout::index_str(t.shape(), i) +
                                    " must be finite and positive");
    }
    record(role, r, false);
    return t;
  }

  // One expert's scalar global scale (shape [] or [1], as ModelOpt writes weight_scale_2).
  float expert_global(Role role, Role scale_role, int e) {
    const Resolved r = require_global(role, scale_role, e);
    const Shape s = ckpt_.info(r.name).shape;
    if (!(s.empty() || s == Shape{1}))
      fail(ErrorCode::Shape, "tensor '" + r.name + "' (" + layout::role_name(role) + ") has shape " + shape_str(s) + ", expected [] or [1]");
    const HostTensor t = global_values(r, role);
    if (e != 0) out_.matches.pop_back();  // recorded once, for expert 0
    return t.as<float>()[0];
  }

  void check_expert_shapes(Role weight_role, Role scale_role, int e, std::int64_t rows, std::int64_t K) {
    const Resolved w = *find(weight_role, e);
    layout::expect_shape(w.name, layout::packed_logical_shape(ckpt_.info(w.name)), {rows, K}, "logical elements");
    const Resolved s = *find(scale_role, e);
    layout::expect_shape(s.name, ckpt_.info(s.name).shape, {rows, K / G_}, "scales");
  }

  // One expert's packed rows [rows, K] and scales [rows, K/32] (shapes checked) copied into the stacked tensors.
  void copy_expert(Role weight_role, Role scale_role, int e, std::int64_t rows, std::int64_t K, std::uint8_t* w_dst,
                   std::uint8_t* s_dst) {
    const Resolved w = *find(weight_role, e);
    std::memcpy(w_dst, layout::packed_view(ckpt_, w.name, {rows, K}).data(), static_cast<std::size_t>(rows * K / 2));
    const Resolved s = *find(scale_role, e);
    if (nv_) {
      const HostTensor sv = layout::ue4m3_scales(ckpt_, s.name);
      std::memcpy(s_dst, sv.data(), sv.nbytes());
    } else {
      const HostTensor sv = ckpt_.view(s.name);
      converted_ = layout::scales_to_e8m0(sv, s.name, s_dst) || converted_;
    }
    if (e == 0) {
      record(weight_role, w, false);
      record(scale_role, s, false);
    }
  }

  void load_per_expert() {
    const Resolved g0 = *find(Role::Gate, 0);
    const Shape l0 = layout::packed_logical_shape(ckpt_.info(g0.name));
    if (l0.size() != 2) fail(ErrorCode::Shape, "tensor '" + g0.name + "' has (logical) shape " + shape_str(l0) + ", expected [I, H]");
    const std::int64_t E = ref_.num_experts, I = l0[0], H = l0[1];
    set_dims(g0.name, E, H, I);
    // Every expert's tensors must exist with their shapes before anything as large as the layer is
    // allocated: the allocation is then backed by bytes the file really holds.
    for (int e = 0; e < E; ++e) {
      check_expert_shapes(Role::Gate, Role::GateScale, e, I, H);
      check_expert_shapes(Role::Up, Role::UpScale, e, I, H);
      check_expert_shapes(Role::Down, Role::DownScale, e, H, I);
    }
    auto& w = out_.weights;
    const std::int64_t G = G_;
    w.w13 = HostTensor::zeros(DType::U8, {E, 2 * I, H / 2});
    w.w13_scale = HostTensor::zeros(DType::U8, {E, 2 * I, H / G});
    w.w2 = HostTensor::zeros(DType::U8, {E, H, I / 2});
    w.w2_scale = HostTensor::zeros(DType::U8, {E, H, I / G});
    auto* w13 = w.w13.mutable_as<std::uint8_t>();
    auto* s13 = w.w13_scale.mutable_as<std::uint8_t>();
    auto* w2 = w.w2.mutable_as<std::uint8_t>();
    auto* s2 = w.w2_scale.mutable_as<std::uint8_t>();
    for (int e = 0; e < E; ++e) {
      copy_expert(Role::Gate, Role::GateScale, e, I, H, w13 + e * 2 * I * H / 2, s13 + e * 2 * I * H / G);
      copy_expert(Role::Up, Role::UpScale, e, I, H, w13 + (e * 2 * I + I) * H / 2, s13 + (e * 2 * I + I) * H / G);
      copy_expert(Role::Down, Role::DownScale, e, H, I, w2 + e * H * I / 2, s2 + e * H * I / G);
    }
    if (nv_) {  // gate, up: w13_global_scale [e, 0], [e, 1]; down: w2_global_scale [e]
      w.w13_global_scale = HostTensor::zeros(DType::F32, {E, 2});
      w.w2_global_scale = HostTensor::zeros(DType::F32, {E});
      for (int e = 0; e < E; ++e) {
        w.w13_global_scale->mutable_as<float>()[2 * e] = expert_global(Role::GateGlobal, Role::GateScale, e);
        w.w13_global_scale->mutable_as<float>()[2 * e + 1] = expert_global(Role::UpGlobal, Role::UpScale, e);
        w.w2_global_scale->mutable_as<float>()[e] = expert_global(Role::DownGlobal, Role::DownScale, e);
      }
    }
  }

  // gpt-oss rows alternate gate, up: canonical row r (< I) is stored row 2r, row I + r is 2r + 1.
  static void deinterleave(const std::uint8_t* src, std::uint8_t* dst, std::int64_t E, std::int64_t I, std::size_t row_bytes) {
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t r = 0; r < I; ++r) {
        const std::uint8_t* s = src + (e * 2 * I + 2 * r) * row_bytes;
        std::memcpy(dst + (e * 2 * I + r) * row_bytes, s, row_bytes);
        std::memcpy(dst + (e * 2 * I + I + r) * row_bytes, s + row_bytes, row_bytes);
      }
  }

  void load_gpt_oss() {
    const Resolved b13 = *find(Role::W13);
    const Shape l13 = layout::packed_logical_shape(ckpt_.info(b13.name));
    if (l13.size() != 4 || l13[1] % 2 || l13[3] != 32)
      fail(ErrorCode::Shape, "tensor '" + b13.name + "' has shape " + shape_str(ckpt_.info(b13.name).shape) +
                                 ", expected [E, 2I, H/32, 16] bytes");
    const std::int64_t E = l13[0], I = l13[1] / 2, H = l13[2] * 32;
    set_dims(b13.name, E, H, I);
    auto& w = out_.weights;
    const HostTensor raw13 = layout::packed_view(ckpt_, b13.name, l13);
    w.w13 = HostTensor::zeros(DType::U8, {E, 2 * I, H / 2});
    deinterleave(raw13.as<std::uint8_t>(), w.w13.mutable_as<std::uint8_t>(), E, I, static_cast<std::size_t>(H / 2));
    record(Role::W13, b13, false);

    const Resolved b2 = *find(Role::W2);
    const Shape l2 = layout::packed_logical_shape(ckpt_.info(b2.name));
    layout::expect_shape(b2.name, l2, {E, H, I / 32, 32}, "down_proj blocks, logical elements");
    w.w2 = ckpt_.view_as(b2.name, DType::U8, {E, H, I / 2});
    record(Role::W2, b2, true);

    const HostTensor s13 = scales(Role::W13Scale, {E, 2 * I, H / 32});
    w.w13_scale = HostTensor::zeros(DType::U8, {E, 2 * I, H / 32});
    deinterleave(s13.as<std::uint8_t>(), w.w13_scale.mutable_as<std::uint8_t>(), E, I, static_cast<std::size_t>(H / 32));
    out_.matches.back().zero_copy = false;  // the scales were viewed, then de-interleaved into a copy
    w.w2_scale = scales(Role::W2Scale, {E, H, I / 32});

    if (auto bias = f32(Role::W13Bias, {E, 2 * I})) {
      w.w13_bias = HostTensor::zeros(DType::F32, {E, 2 * I});
      deinterleave(bias->as<std::uint8_t>(), w.w13_bias->mutable_as<std::uint8_t>(), E, I, sizeof(float));
    }
    w.w2_bias = f32(Role::W2Bias, {E, H});
  }

  // Every E8M0 byte but 0xFF is a scale (2^-127..2^127); only a block where scale x code is infinite
  // in float32 (byte 253 with |code| >= 4, byte 254 with |code| >= 2) is refused, naming the stored
  // scale tensor, its index there, the canonical expert, row and group, the byte and the code.
  void check_finite_blocks() {
    const auto& w = out_.weights;
    const std::int64_t I = w.inter, H = w.hidden;
    for (const bool first : {true, false}) {
      const HostTensor& packed = first ? w.w13 : w.w2;
      const HostTensor& scales = first ? w.w13_scale : w.w2_scale;
      const std::int64_t rows = first ? 2 * I : H, K = first ? H : I;
      const std::int64_t i = formats::first_e8m0_overflow(packed.as<std::uint8_t>(), scales.as<std::uint8_t>(), w.num_experts * rows, K);
      if (i < 0) continue;
      const std::int64_t e = i / K / rows, r = i / K % rows, g = i % K / 32;
      const std::uint8_t b = scales.as<std::uint8_t>()[(e * rows + r) * (K / 32) + g];
      const std::uint8_t code = formats::nibble_at(packed.as<std::uint8_t>(), i);
      static const char* const magnitude[8] = {"0", "0.5", "1", "1.5", "2", "3", "4", "6"};
      fail(ErrorCode::Format, "tensor '" + stored_scale(first, e, r, g) + " (expert " + std::to_string(e) + ", " +
                                  (first ? (r < I ? "gate row " + std::to_string(r) : "up row " + std::to_string(r - I)) : "row " + std::to_string(r)) +
                                  ", group " + std::to_string(g) + ") is E8M0 byte " + std::to_string(b) + " (2^" + std::to_string(b - 127) +
                                  "), and with E2M1 code " + std::to_string(code) + " (" + (code & 8u ? "-" : "") + magnitude[code & 7u] +
                                  ") of its block the weight is infinite in float32 (E8M0 bytes 0..254 are all accepted; only a block "
                                  "whose scale times a code reaches 2^128 is refused)");
    }
  }

  // "name': scale at index [..]" of the stored scale of canonical (expert e, row r, group g).
  std::string stored_scale(bool w13, std::int64_t e, std::int64_t r, std::int64_t g) {
    const std::int64_t I = out_.weights.inter;
    Shape index;
    std::string name;
    switch (ref_.layout) {
      case MoeLayout::DeepSeekV4:
      case MoeLayout::ModelOpt: {
        const Role role = !w13 ? Role::DownScale : r < I ? Role::GateScale : Role::UpScale;
        name = find(role, static_cast<int>(e))->name;
        index = {w13 && r >= I ? r - I : r, g};
        break;
      }
      case MoeLayout::GptOss:  // stored rows alternate gate, up
        name = find(w13 ? Role::W13Scale : Role::W2Scale)->name;
        index = {e, w13 ? (r < I ? 2 * r : 2 * (r - I) + 1) : r, g};
        break;
      default:
        name = find(w13 ? Role::W13Scale : Role::W2Scale)->name;
        index = {e, r, g};
    }
    return name + "': scale at index " + shape_str(index);
  }

  void load_router() {
    const std::int64_t E = out_.weights.num_experts, H = out_.weights.hidden;
    for (const auto& rule : rule_.tensors) {
      if (rule.scope != layout::Scope::Module) continue;
      const Shape expected = rule.role == Role::RouterWeight ? Shape{E, H} : Shape{E};
      auto t = f32(rule.role, expected);
      if (!t) continue;
      if (rule.role == Role::RouterWeight) out_.weights.router_weight = std::move(t);
      else if (rule.role == Role::CorrectionBias) out_.weights.correction_bias = std::move(t);
      else out_.router_logit_bias = std::move(t);
    }
  }

  const Checkpoint& ckpt_;
  const MoeLayerRef& ref_;
  const layout::LayoutRule& rule_;
  LoadedMoeLayer out_;
  bool converted_ = false;
  bool nv_ = false;  // NVFP4 (detect_format)
  int G_ = 32;       // the group: 32 (MXFP4) or 16 (NVFP4)
};

}  // namespace

LoadedMoeLayer load_moe_layer(const Checkpoint& ckpt, const MoeLayerRef& ref) {
  layout::check_layer_dtypes(ckpt, ref);
  return Mxfp4Loader(ckpt, ref).run();
}

LoadedMoeLayer load_moe_layer(const Checkpoint& ckpt, int layer) { return load_moe_layer(ckpt, find_moe_layer(ckpt, layer)); }

}  // namespace mxmoe
