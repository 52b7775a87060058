// MoeLayer: validation, one-time weight preparation and the workspace it owns; the forward's launch
// sequence itself is layer/forward_launch (shared with the C ABI).
#include <algorithm>
#include <string>
#include <vector>

#include "kernels/align.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/routing.hpp"
#include "mxmoe/device_buffer.hpp"
#include "layer/forward_launch.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"
#include "prepare/prepare_gpu.hpp"
#include "prepare/scale_shift.hpp"

namespace mxmoe {


struct MoeLayer::Impl {
  int E = 0, H = 0, I = 0, max_tokens = 0, top_k = 0, device = 0, sm_count = 1;
  ActivationConfig activation;
  GemmTile gemm_tile = GemmTile::Auto;
  bool batch_invariant = false;
  kernels::GemmFormat format = kernels::GemmFormat::Mxfp4;
  tiling::TiledShape w13_shape{}, w2_shape{};
  DeviceBuffer w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale, correction_bias;
  // Mxfp4Shifted only: the per-row factors 2^d, fp32 [E, 2I] and [E, H] (E x (2I + H) x 4 bytes).
  DeviceBuffer w13_row_factor, w2_row_factor;
  DeviceBuffer workspace;
  layer::WorkspaceLayout ws;
  float prepare_ms = 0.0f;
  std::size_t bytes = 0;
  W4a8FoldReport fold;  // W4A8 only

  layer::PreparedWeightsView view() const {
    return {w13.as<std::uint8_t>(), w13_scale.as<std::uint8_t>(), w2.as<std::uint8_t>(), w2_scale.as<std::uint8_t>(),
            w13_bias.as<float>(), w2_bias.as<float>(), E, H, I, w13_global_scale.as<float>(), w2_global_scale.as<float>(),
            w13_row_factor.as<float>(), w2_row_factor.as<float>(), format};
  }
  void run(const void* hidden, const std::int32_t* ids, const float* weights, void* out, int T, cudaStream_t stream) const {
    layer::launch_forward(view(), activation, gemm_tile, sm_count, workspace.as(), ws, {hidden, ids, weights, out, T, top_k, batch_invariant},
                          stream);
  }
  std::int32_t* routed_ids() const { return reinterpret_cast<std::int32_t*>(workspace.as<std::uint8_t>() + ws.routed_ids); }
  float* routed_weights() const { return reinterpret_cast<float*>(workspace.as<std::uint8_t>() + ws.routed_weights); }
};

namespace {

DeviceBuffer upload(const void* data, std::size_t bytes, const char* what) {
  DeviceBuffer b(bytes, what);
  b.upload(data, bytes);
  return b;
}
DeviceBuffer upload(const HostTensor& t, const char* what) { return upload(t.data(), t.nbytes(), what); }

// Uploads canonical weights a group of experts at a time through one staging buffer and tiles
// them, so the device never holds two copies of the layer. Returns the tiling kernels' time.
// `scales`: the canonical bytes, or Mxfp4Shifted's shifted copy of them. W4A8 (`w4a8_factors` not
// null): the W4A8 tile layout, and the rows' factors 2^base written to it ([E, rows] fp32).
float prepare_matrix(const HostTensor& weights, const std::uint8_t* scales, const tiling::TiledShape& shape, int E,
                     DeviceBuffer& tiled_w, DeviceBuffer& tiled_s, cudaStream_t stream, DeviceBuffer* w4a8_factors = nullptr) {
  const std::size_t w_bytes = static_cast<std::size_t>(shape.rows) * (shape.k / 2);
  const std::size_t s_bytes = static_cast<std::size_t>(shape.rows) * shape.groups();
  tiled_w = DeviceBuffer(static_cast<std::size_t>(shape.weight_bytes()) * E, "the prepared weights");
  tiled_s = DeviceBuffer(static_cast<std::size_t>(shape.scale_bytes()) * E, "the prepared scales");
  const int group = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(E, (256u << 20) / (w_bytes + s_bytes))));
  DeviceBuffer stage_w(w_bytes * group, "the weights' staging buffer"), stage_s(s_bytes * group, "the scales' staging buffer");
  DeviceBuffer bases;
  if (w4a8_factors) {
    *w4a8_factors = DeviceBuffer(static_cast<std::size_t>(shape.rows) * E * sizeof(float), "the W4A8 row factors");
    bases = DeviceBuffer(static_cast<std::size_t>(shape.rows) * group * sizeof(std::int32_t), "the W4A8 row bases");
  }
  cudaEvent_t start, stop;
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  float total = 0.0f;
  for (int e0 = 0; e0 < E; e0 += group) {
    const int n = std::min(group, E - e0);
    check_cuda(cudaMemcpyAsync(stage_w.as(), weights.as<std::uint8_t>() + w_bytes * e0, w_bytes * n, cudaMemcpyHostToDevice, stream), "upload weights");
    check_cuda(cudaMemcpyAsync(stage_s.as(), scales + s_bytes * e0, s_bytes * n, cudaMemcpyHostToDevice, stream), "upload scales");
    check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    if (w4a8_factors)
      tiling::launch_tile_matrices_w4a8(stage_w.as<std::uint8_t>(), stage_s.as<std::uint8_t>(), shape, n, bases.as<std::int32_t>(),
                                        tiled_w.as<std::uint8_t>() + shape.weight_bytes() * e0,
                                        tiled_s.as<std::uint8_t>() + shape.scale_bytes() * e0,
                                        w4a8_factors->as<float>() + static_cast<std::size_t>(shape.rows) * e0, stream);
    else
      tiling::launch_tile_matrices(stage_w.as<std::uint8_t>(), stage_s.as<std::uint8_t>(), shape, n,
                                   tiled_w.as<std::uint8_t>() + shape.weight_bytes() * e0,
                                   tiled_s.as<std::uint8_t>() + shape.scale_bytes() * e0, stream);
    check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "prepare");
    float ms = 0.0f;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    total += ms;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return total;
}

void check_num_tokens(const char* entry, int num_tokens, int max_tokens) {
  if (num_tokens < 1 || num_tokens > max_tokens)
    fail(ErrorCode::InvalidArgument, std::string(entry) + ": num_tokens must be in 1.." + std::to_string(max_tokens) +
                                         " (the layer's max_tokens), got " + std::to_string(num_tokens));
}


}  // namespace

MoeLayer::MoeLayer(const CanonicalMoeWeights& w, const MoeLayerOptions& o) : impl_(std::make_unique<Impl>()) {
  validate_layer_formats(w.format);
  w.validate();
  Impl& m = *impl_;
  m.E = w.num_experts;
  m.H = w.hidden;
  m.I = w.inter;
  if (o.max_tokens < 1 || o.max_tokens > (1 << 22))
    fail(ErrorCode::InvalidArgument, "MoeLayer: max_tokens must be in 1..4194304, got " + std::to_string(o.max_tokens));
  if (o.top_k < 1 || o.top_k > m.E || o.top_k > kernels::kMaxRoutingTopK)
    fail(ErrorCode::InvalidArgument, "MoeLayer: top_k must be in 1.." + std::to_string(std::min(m.E, kernels::kMaxRoutingTopK)) + ", got " + std::to_string(o.top_k));
  if (m.E > kernels::kMaxAlignExperts)
    fail(ErrorCode::Unsupported, "MoeLayer: at most " + std::to_string(kernels::kMaxAlignExperts) + " experts, got " + std::to_string(m.E));
  o.activation.validate();
  m.max_tokens = o.max_tokens;
  m.top_k = o.top_k;
  m.activation = o.activation;
  m.device = o.device;
  m.gemm_tile = o.gemm_tile;
  m.batch_invariant = o.batch_invariant;
  const bool fp8 = o.activation_precision == ActivationPrecision::Fp8PerToken;

  const DeviceCheck dev = check_hopper_device(o.device);
  if (!dev.ok) fail(ErrorCode::Unsupported, dev.message);
  const int group = w.format.group_size;
  // MXFP4: one pass over the scales gives both the format and, for Mxfp4Shifted, the shifts.
  prepare::E8m0Shifts shifts;
  if (group == 32 && !fp8) shifts = prepare::e8m0_shifts(w.w13_scale.as<std::uint8_t>(), w.w2_scale.as<std::uint8_t>(), m.E, m.H, m.I);
  m.format = kernels::choose_gemm_format(group, w.format.activation_dtype == DType::F16, shifts.summary, o.activation_precision);
  const bool shifted = m.format == kernels::GemmFormat::Mxfp4Shifted;
  // Mxfp4Shifted prepares shifted copies of the (small) scale tensors; the others the canonical bytes.
  std::vector<std::uint8_t> w13_scale_shifted, w2_scale_shifted;
  if (shifted) {
    w13_scale_shifted = prepare::shift_scales(w.w13_scale.as<std::uint8_t>(), m.E, 2 * m.I, m.H / 32, shifts.w13.data());
    w2_scale_shifted = prepare::shift_scales(w.w2_scale.as<std::uint8_t>(), m.E, m.H, m.I / 32, shifts.w2.data());
  }
  check_cuda(cudaSetDevice(o.device), "cudaSetDevice");
  check_cuda(cudaDeviceGetAttribute(&m.sm_count, cudaDevAttrMultiProcessorCount, o.device), "cudaDeviceGetAttribute");
  kernels::configure_moe_gemm_kernels();

  const bool f16 = w.format.activation_dtype == DType::F16;  // fp16 operands: their own bit placement
  m.w13_shape = {2 * m.I, m.H, true, group, f16};
  m.w2_shape = {m.H, m.I, false, group, f16};
  cudaStream_t stream;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  try {
    // W4A8's row factors 2^base come from its prepare, where Mxfp4Shifted's come from the host below.
    m.prepare_ms = prepare_matrix(w.w13, shifted ? w13_scale_shifted.data() : w.w13_scale.as<std::uint8_t>(), m.w13_shape,
                                  m.E, m.w13, m.w13_scale, stream, fp8 ? &m.w13_row_factor : nullptr);
    m.prepare_ms += prepare_matrix(w.w2, shifted ? w2_scale_shifted.data() : w.w2_scale.as<std::uint8_t>(), m.w2_shape, m.E,
                                   m.w2, m.w2_scale, stream, fp8 ? &m.w2_row_factor : nullptr);
  } catch (...) {
    cudaStreamDestroy(stream);
    throw;
  }
  check_cuda(cudaStreamDestroy(stream), "cudaStreamDestroy");
  if (w.w13_bias) m.w13_bias = upload(*w.w13_bias, "w13_bias");
  if (w.w2_bias) m.w2_bias = upload(*w.w2_bias, "w2_bias");
  if (w.w13_global_scale) m.w13_global_scale = upload(*w.w13_global_scale, "w13_global_scale");
  if (w.w2_global_scale) m.w2_global_scale = upload(*w.w2_global_scale, "w2_global_scale");
  if (shifted) {  // the kernels' row factors: 2^d per (expert, weight row)
    const std::vector<float> f13 = shifts.w13_factors(), f2 = shifts.w2_factors();
    m.w13_row_factor = upload(f13.data(), f13.size() * sizeof(float), "the w13 shift factors");
    m.w2_row_factor = upload(f2.data(), f2.size() * sizeof(float), "the w2 shift factors");
  }
  if (w.correction_bias) m.correction_bias = upload(*w.correction_bias, "correction_bias");
  if (fp8) m.fold = w4a8_fold_report(w);  // the groups the GPU prepare re-quantised, counted on the host

  m.ws = layer::workspace_layout(m.E, m.H, m.I, m.max_tokens, m.top_k, fp8);
  m.workspace = DeviceBuffer(m.ws.total, "the forward workspace");
  for (const DeviceBuffer* b : {&m.w13, &m.w13_scale, &m.w2, &m.w2_scale, &m.w13_bias, &m.w2_bias, &m.w13_global_scale,
                                &m.w2_global_scale, &m.w13_row_factor, &m.w2_row_factor, &m.correction_bias, &m.workspace})
    m.bytes += b->bytes();
}

MoeLayer::~MoeLayer() = default;

void MoeLayer::forward(const void* hidden, const std::int32_t* topk_ids, const float* topk_weights, void* out,
                       int num_tokens, cudaStream_t stream) const {
  check_num_tokens("MoeLayer::forward", num_tokens, impl_->max_tokens);
  layer::check_device_pointer(hidden, 16, "MoeLayer::forward", "hidden");
  layer::check_device_pointer(out, 16, "MoeLayer::forward", "out");
  layer::check_device_pointer(topk_ids, 4, "MoeLayer::forward", "topk_ids");
  layer::check_device_pointer(topk_weights, 4, "MoeLayer::forward", "topk_weights");
  impl_->run(hidden, topk_ids, topk_weights, out, num_tokens, stream);
}

void MoeLayer::forward_from_logits(const void* hidden, const float* router_logits, const RoutingConfig& routing, void* out,
                                   int num_tokens, cudaStream_t stream) const {
  if (routing.top_k != impl_->top_k)
    fail(ErrorCode::InvalidArgument, "MoeLayer::forward_from_logits: routing top_k " + std::to_string(routing.top_k) +
                                         " differs from the layer's top_k " + std::to_string(impl_->top_k));
  check_num_tokens("MoeLayer::forward_from_logits", num_tokens, impl_->max_tokens);
  layer::check_device_pointer(router_logits, 4, "MoeLayer::forward_from_logits", "router_logits");
  layer::check_device_pointer(hidden, 16, "MoeLayer::forward_from_logits", "hidden");
  layer::check_device_pointer(out, 16, "MoeLayer::forward_from_logits", "out");
  kernels::launch_routing(router_logits, impl_->correction_bias.as<float>(), num_tokens, impl_->E, routing,
                          impl_->routed_ids(), impl_->routed_weights(), stream);
  impl_->run(hidden, impl_->routed_ids(), impl_->routed_weights(), out, num_tokens, stream);
}

int MoeLayer::hidden() const { return impl_->H; }
int MoeLayer::inter() const { return impl_->I; }
int MoeLayer::num_experts() const { return impl_->E; }
int MoeLayer::max_tokens() const { return impl_->max_tokens; }
float MoeLayer::prepare_ms() const { return impl_->prepare_ms; }
const char* MoeLayer::gemm_format() const { return kernels::gemm_format_name(impl_->format); }
std::string MoeLayer::gemm_plan_for(int num_tokens) const {
  const Impl& m = *impl_;
  return kernels::gemm_lanes_name(kernels::plan_gemm_lanes(m.gemm_tile, m.view().gemm_problem(num_tokens, m.top_k, m.batch_invariant, m.sm_count)));
}
std::size_t MoeLayer::device_bytes() const { return impl_->bytes; }
W4a8FoldReport MoeLayer::w4a8_fold() const { return impl_->fold; }

}  // namespace mxmoe
