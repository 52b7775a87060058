#include "layout/emit.hpp"

#include <cstring>

#include "formats/bf16.hpp"
#include "formats/fp16.hpp"
#include "layout/layer_dtypes.hpp"
#include "layout/tensor_convert.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::layout {
namespace {

std::string planned_name(MoeLayout layout, Role role, const std::string& prefix, int expert) {
  const TensorRule& rule = rule_for(layout_rule(layout), role);
  return tensor_name(prefix, rule.scope, rule.aliases.front(), expert);
}

// Copies rows [row0, row0 + rows) of every expert of a [E, R, C] byte tensor into dst.
void copy_rows(const HostTensor& src, std::int64_t e, std::int64_t row0, std::int64_t rows, std::size_t row_bytes, std::uint8_t* dst) {
  const std::int64_t R = src.dim(1);
  std::memcpy(dst, src.as<std::uint8_t>() + (e * R + row0) * row_bytes, rows * row_bytes);
}

// gpt-oss order: stored row 2r is canonical row r (gate), 2r + 1 is row I + r (up).
HostTensor interleave(const HostTensor& src, const Shape& out_shape, std::int64_t E, std::int64_t I, std::size_t row_bytes) {
  HostTensor out = HostTensor::zeros(src.dtype() == DType::F32 ? DType::F32 : DType::U8, out_shape);
  auto* dst = static_cast<std::uint8_t*>(out.mutable_data());
  const auto* s = static_cast<const std::uint8_t*>(src.data());
  for (std::int64_t e = 0; e < E; ++e)
    for (std::int64_t r = 0; r < I; ++r) {
      std::memcpy(dst + (e * 2 * I + 2 * r) * row_bytes, s + (e * 2 * I + r) * row_bytes, row_bytes);
      std::memcpy(dst + (e * 2 * I + 2 * r + 1) * row_bytes, s + (e * 2 * I + I + r) * row_bytes, row_bytes);
    }
  return out;
}

HostTensor copy_as(const HostTensor& src, DType dtype, const Shape& shape) {
  HostTensor out = HostTensor::zeros(dtype, shape);
  if (out.nbytes() != src.nbytes()) fail(ErrorCode::Shape, "internal: emitted tensor size mismatch");
  std::memcpy(out.mutable_data(), src.data(), src.nbytes());
  return out;
}

// An F32 tensor back in `dtype` (F32, BF16 or F16). Exact for values read from that dtype, which is
// how the router reaches here: it was widened on load and is narrowed back to its stored dtype.
HostTensor from_f32(const HostTensor& src, DType dtype) {
  if (dtype == DType::F32) return copy_as(src, DType::F32, src.shape());
  HostTensor out = HostTensor::zeros(dtype, src.shape());
  auto* dst = out.mutable_as<std::uint16_t>();
  for (std::int64_t i = 0; i < src.numel(); ++i)
    dst[i] = dtype == DType::BF16 ? formats::float_to_bf16(src.as<float>()[i]) : formats::float_to_fp16(src.as<float>()[i]);
  return out;
}

}  // namespace

bool LayerOutputSpec::operator==(const LayerOutputSpec& o) const {
  return E == o.E && H == o.H && I == o.I && w13_bias == o.w13_bias && w2_bias == o.w2_bias && router_weight == o.router_weight &&
         correction_bias == o.correction_bias && router_logit_bias == o.router_logit_bias && router_dtype == o.router_dtype &&
         format.group_size == o.format.group_size && format.activation_dtype == o.format.activation_dtype;
}

// The dtype a float tensor is stored in, when it is one mxmoe writes back as it found it.
DType stored_float_dtype(const std::string& name) {
  return name == "BF16" ? DType::BF16 : name == "F16" ? DType::F16 : DType::F32;
}

LayerOutputSpec output_spec(const LoadedMoeLayer& l) {
  const auto& w = l.weights;
  LayerOutputSpec s{w.num_experts, w.hidden, w.inter, w.w13_bias.has_value(), w.w2_bias.has_value(), w.router_weight.has_value(),
               w.correction_bias.has_value(), l.router_logit_bias.has_value(), DType::F32, w.format};
  for (const auto& m : l.matches)
    if (m.role == role_name(Role::RouterWeight)) s.router_dtype = stored_float_dtype(m.dtype);
  return s;
}

LayerOutputSpec probe_output_spec(const Checkpoint& ckpt, const MoeLayerRef& ref) {
  if (layout_is_quantized(ref.layout)) return output_spec(load_moe_layer(ckpt, ref));
  check_layer_dtypes(ckpt, ref);  // before the output is planned from its shapes
  const LayoutRule& rule = layout_rule(ref.layout);
  LayerOutputSpec s;
  s.E = ref.num_experts;
  s.format = WeightFormat::mxfp4();  // quantize_checkpoint sets the format a dense layer is written in
  if (ref.layout == MoeLayout::DensePerExpert) {
    const Shape g = ckpt.info(resolve_or_fail(ckpt, ref.module_prefix, rule_for(rule, Role::Gate), 0)->name).shape;
    if (g.size() == 2) s.I = g[0], s.H = g[1];
  } else {
    const Shape w = ckpt.info(resolve_or_fail(ckpt, ref.module_prefix, rule_for(rule, Role::W13))->name).shape;
    if (w.size() == 3 && ref.layout == MoeLayout::DenseGptOss) s.H = w[1], s.I = w[2] / 2;  // [E, H, 2I]
    else if (w.size() == 3) s.I = w[1] / 2, s.H = w[2];                                      // [E, 2I, H]
    s.w13_bias = resolve(ckpt, ref.module_prefix, rule_for(rule, Role::W13Bias)).has_value();
    s.w2_bias = resolve(ckpt, ref.module_prefix, rule_for(rule, Role::W2Bias)).has_value();
  }
  const auto router = resolve(ckpt, ref.module_prefix, rule_for(rule, Role::RouterWeight));
  s.router_weight = router.has_value();
  if (router) s.router_dtype = stored_float_dtype(ckpt.info(router->name).dtype_name);
  for (const auto& t : rule.tensors) {  // the router's biases the layout has (a correction or a logit bias)
    if (t.role == Role::CorrectionBias) s.correction_bias = resolve(ckpt, ref.module_prefix, t).has_value();
    if (t.role == Role::RouterLogitBias) s.router_logit_bias = resolve(ckpt, ref.module_prefix, t).has_value();
  }
  return s;
}

std::vector<PlannedTensor> plan_layer(const LayerOutputSpec& s, MoeLayout layout, const std::string& prefix) {
  const std::int64_t E = s.E, H = s.H, I = s.I, G = s.format.group_size;
  const bool nv = s.format.nvfp4();
  const DType scale_dtype = nv ? DType::F8_E4M3 : DType::F8_E8M0;
  if (nv && layout != MoeLayout::ModelOpt && layout != MoeLayout::Fused)
    fail(ErrorCode::Unsupported, std::string("layout ") + moe_layout_name(layout) + " has no NVFP4 form; the layer '" + prefix +
                                     "experts.' is NVFP4 (write modelopt or fused)");
  std::vector<PlannedTensor> out;
  auto add = [&](Role role, int expert, DType dtype, Shape shape) {
    out.push_back({{planned_name(layout, role, prefix, expert), dtype, std::move(shape)}, role, expert});
  };
  switch (layout) {
    case MoeLayout::DeepSeekV4:
      // As the released DeepSeek V4 checkpoints store experts: I8 [rows, K/2] (two E2M1 codes a byte,
      // low nibble first) with F8_E8M0 scales [rows, K/32].
      if (s.w13_bias || s.w2_bias) fail(ErrorCode::Unsupported, "layout dsv4 has no expert biases; the layer '" + prefix + "experts.' has some");
      for (int e = 0; e < E; ++e) {
        add(Role::Gate, e, DType::I8, {I, H / 2});
        add(Role::GateScale, e, DType::F8_E8M0, {I, H / 32});
        add(Role::Up, e, DType::I8, {I, H / 2});
        add(Role::UpScale, e, DType::F8_E8M0, {I, H / 32});
        add(Role::Down, e, DType::I8, {H, I / 2});
        add(Role::DownScale, e, DType::F8_E8M0, {H, I / 32});
      }
      break;
    case MoeLayout::ModelOpt:
      // As ModelOpt exports NVFP4 experts: U8 [rows, K/2], F8_E4M3 block scales [rows, K/16] and an F32
      // scalar weight_scale_2 per matrix (MXFP4 under these names: F8_E8M0 scales [rows, K/32], no scalar).
      if (s.w13_bias || s.w2_bias) fail(ErrorCode::Unsupported, "layout modelopt has no expert biases; the layer '" + prefix + "experts.' has some");
      for (int e = 0; e < E; ++e) {
        add(Role::Gate, e, DType::U8, {I, H / 2});
        add(Role::GateScale, e, scale_dtype, {I, H / G});
        if (nv) add(Role::GateGlobal, e, DType::F32, {});
        add(Role::Up, e, DType::U8, {I, H / 2});
        add(Role::UpScale, e, scale_dtype, {I, H / G});
        if (nv) add(Role::UpGlobal, e, DType::F32, {});
        add(Role::Down, e, DType::U8, {H, I / 2});
        add(Role::DownScale, e, scale_dtype, {H, I / G});
        if (nv) add(Role::DownGlobal, e, DType::F32, {});
      }
      break;
    case MoeLayout::Fused:
      add(Role::W13, -1, DType::U8, {E, 2 * I, H / 2});
      add(Role::W13Scale, -1, scale_dtype, {E, 2 * I, H / G});
      if (nv) add(Role::W13Global, -1, DType::F32, {E, 2});
      if (s.w13_bias) add(Role::W13Bias, -1, DType::F32, {E, 2 * I});
      add(Role::W2, -1, DType::U8, {E, H, I / 2});
      add(Role::W2Scale, -1, scale_dtype, {E, H, I / G});
      if (nv) add(Role::W2Global, -1, DType::F32, {E});
      if (s.w2_bias) add(Role::W2Bias, -1, DType::F32, {E, H});
      break;
    case MoeLayout::GptOss:
      add(Role::W13, -1, DType::U8, {E, 2 * I, H / 32, 16});
      add(Role::W13Scale, -1, DType::U8, {E, 2 * I, H / 32});
      if (s.w13_bias) add(Role::W13Bias, -1, DType::F32, {E, 2 * I});
      add(Role::W2, -1, DType::U8, {E, H, I / 32, 16});
      add(Role::W2Scale, -1, DType::U8, {E, H, I / 32});
      if (s.w2_bias) add(Role::W2Bias, -1, DType::F32, {E, H});
      break;
    default: fail(ErrorCode::InvalidArgument, std::string("cannot write layout ") + moe_layout_name(layout) + ": not an MXFP4 layout");
  }
  if (s.router_weight) add(Role::RouterWeight, -1, s.router_dtype, {E, H});
  if (s.correction_bias) {
    if (layout == MoeLayout::GptOss)
      fail(ErrorCode::Unsupported, "layout gpt-oss has no correction bias; the layer '" + prefix + "experts.' has one");
    add(Role::CorrectionBias, -1, DType::F32, {E});
  }
  if (s.router_logit_bias) {
    if (layout != MoeLayout::GptOss)
      fail(ErrorCode::Unsupported, std::string("layout ") + moe_layout_name(layout) + " has no router logit bias; the layer '" + prefix +
                                       "experts.' has one (write gpt-oss)");
    add(Role::RouterLogitBias, -1, DType::F32, {E});
  }
  return out;
}

HostTensor layer_tensor(const LoadedMoeLayer& layer, MoeLayout layout, const PlannedTensor& p) {
  const auto& w = layer.weights;
  const std::int64_t E = w.num_experts, H = w.hidden, I = w.inter, G = w.format.group_size;
  const Shape& shape = p.entry.shape;
  HostTensor out = HostTensor::zeros(p.entry.dtype, shape);
  auto* dst = static_cast<std::uint8_t*>(out.mutable_data());
  const int e = p.expert;
  switch (p.role) {
    case Role::Gate: copy_rows(w.w13, e, 0, I, H / 2, dst); return out;
    case Role::Up: copy_rows(w.w13, e, I, I, H / 2, dst); return out;
    case Role::Down: copy_rows(w.w2, e, 0, H, I / 2, dst); return out;
    case Role::GateScale: copy_rows(w.w13_scale, e, 0, I, H / G, dst); return out;
    case Role::UpScale: copy_rows(w.w13_scale, e, I, I, H / G, dst); return out;
    case Role::DownScale: copy_rows(w.w2_scale, e, 0, H, I / G, dst); return out;
    case Role::GateGlobal: out.mutable_as<float>()[0] = w.w13_global_scale->as<float>()[2 * e]; return out;
    case Role::UpGlobal: out.mutable_as<float>()[0] = w.w13_global_scale->as<float>()[2 * e + 1]; return out;
    case Role::DownGlobal: out.mutable_as<float>()[0] = w.w2_global_scale->as<float>()[e]; return out;
    case Role::W13Global: return copy_as(*w.w13_global_scale, DType::F32, shape);
    case Role::W2Global: return copy_as(*w.w2_global_scale, DType::F32, shape);
    case Role::W13InputScale:
    case Role::W2InputScale:
    case Role::GateInputScale:
    case Role::UpInputScale:
    case Role::DownInputScale: fail(ErrorCode::InvalidArgument, "internal: input scales are never written");
    case Role::W13:
      return layout == MoeLayout::GptOss ? interleave(w.w13, shape, E, I, H / 2) : copy_as(w.w13, p.entry.dtype, shape);
    case Role::W13Scale:
      return layout == MoeLayout::GptOss ? interleave(w.w13_scale, shape, E, I, H / 32) : copy_as(w.w13_scale, p.entry.dtype, shape);
    case Role::W13Bias:
      return layout == MoeLayout::GptOss ? interleave(*w.w13_bias, shape, E, I, sizeof(float)) : copy_as(*w.w13_bias, DType::F32, shape);
    case Role::W2: return copy_as(w.w2, p.entry.dtype, shape);
    case Role::W2Scale: return copy_as(w.w2_scale, p.entry.dtype, shape);
    case Role::W2Bias: return copy_as(*w.w2_bias, DType::F32, shape);
    case Role::RouterWeight: return from_f32(*w.router_weight, p.entry.dtype);
    case Role::CorrectionBias: return copy_as(*w.correction_bias, DType::F32, shape);
    case Role::RouterLogitBias: return copy_as(*layer.router_logit_bias, DType::F32, shape);
  }
  return out;
}

std::vector<std::string> layer_tensor_names(const Checkpoint& ckpt, const MoeLayerRef& ref) {
  std::vector<std::string> names;
  for (const auto& rule : layout_rule(ref.layout).tensors) {
    const int experts = rule.scope == Scope::PerExpert ? ref.num_experts : 1;
    for (int e = 0; e < experts; ++e)
      for (const auto& alias : rule.aliases) {
        std::string name = tensor_name(ref.module_prefix, rule.scope, alias, e);
        if (ckpt.contains(name)) names.push_back(std::move(name));
      }
  }
  return names;
}

}  // namespace mxmoe::layout

namespace mxmoe {

std::vector<std::pair<std::string, HostTensor>> moe_layer_tensors(const LoadedMoeLayer& layer, MoeLayout layout,
                                                                 const std::string& module_prefix) {
  std::vector<std::pair<std::string, HostTensor>> out;
  for (const auto& p : layout::plan_layer(layout::output_spec(layer), layout, module_prefix))
    out.emplace_back(p.entry.name, layout::layer_tensor(layer, layout, p));
  return out;
}

}  // namespace mxmoe
