// The C ABI's device half: tiling, workspace size, forward and routing on the caller's stream,
// with memory the caller owns (a torch tensor, say), so nothing here allocates.
#include <cuda_runtime.h>

#include <mutex>
#include <set>
#include <string>

#include "capi/internal.hpp"
#include "kernels/align.hpp"
#include "kernels/dequant.hpp"
#include "mxmoe/device_buffer.hpp"
#include "kernels/moe_gemm.hpp"
#include "kernels/routing.hpp"
#include "layer/forward_launch.hpp"
#include "mxmoe/moe_layer.hpp"
#include "prepare/prepare_gpu.hpp"

using namespace mxmoe;
using capi::guarded;
using capi::require;

namespace {

// Per device, once: the SM count (split-K choice) and the GEMMs' shared-memory limits.
int device_sm_count() {
  static std::mutex mutex;
  static std::set<int> configured;
  static int sm_counts[64] = {};
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= 64) fail(ErrorCode::Unsupported, "CUDA device index " + std::to_string(device) + " is above 63");
  std::lock_guard<std::mutex> lock(mutex);
  if (!configured.count(device)) {
    const DeviceCheck check = check_hopper_device(device);
    if (!check.ok) fail(ErrorCode::Unsupported, check.message);
    check_cuda(cudaDeviceGetAttribute(&sm_counts[device], cudaDevAttrMultiProcessorCount, device),
                        "cudaDeviceGetAttribute");
    kernels::configure_moe_gemm_kernels();
    configured.insert(device);
  }
  return sm_counts[device];
}

// What the kernels take: 1..4096 experts, top_k 1..16, at most 2^24 routed pairs. Both the
// workspace size and the forward check it (the forward used to rely on the caller having asked).
void check_forward_shape(int E, int num_tokens, int top_k) {
  if (E < 1 || E > kernels::kMaxAlignExperts)
    fail(ErrorCode::Unsupported, "the Hopper kernels take 1.." + std::to_string(kernels::kMaxAlignExperts) + " experts, got " +
                                     std::to_string(E));
  if (num_tokens < 1 || top_k < 1 || top_k > kernels::kMaxRoutingTopK ||
      static_cast<std::int64_t>(num_tokens) * top_k > (std::int64_t{1} << 24))
    fail(ErrorCode::InvalidArgument, "forward: num_tokens must be >= 1 and top_k in 1.." + std::to_string(kernels::kMaxRoutingTopK) +
                                         ", with at most 2^24 routed pairs; got " + std::to_string(num_tokens) + " tokens, top_k " +
                                         std::to_string(top_k));
}

}  // namespace

extern "C" {

int mxmoe_cuda_compiled(void) { return 1; }

int mxmoe_check_device(int device) {
  return guarded("mxmoe_check_device", [&] {
    const DeviceCheck check = check_hopper_device(device);
    if (!check.ok) fail(ErrorCode::Unsupported, check.message);
  });
}

int mxmoe_tile_experts_cuda(const uint8_t* weights, const uint8_t* scales, int rows, int k, int gate_up, int group,
                            int f16, int num_experts, uint8_t* tiled_weights, uint8_t* tiled_scales, void* stream) {
  return guarded("mxmoe_tile_experts_cuda", [&] {
    const char* entry = "mxmoe_tile_experts_cuda";
    for (auto [p, name] : {std::pair<const void*, const char*>{weights, "weights"}, {scales, "scales"},
                           {tiled_weights, "tiled_weights"}, {tiled_scales, "tiled_scales"}})
      require(p, entry, name);
    if (group != 32 && group != 16)
      fail(ErrorCode::InvalidArgument, std::string(entry) + ": the group must be 32 (MXFP4) or 16 (NVFP4), got " + std::to_string(group));
    if (f16 && group != 16)
      fail(ErrorCode::DType, std::string(entry) + ": the fp16 layout is for NVFP4 (group 16); MXFP4 runs bf16 activations");
    if (rows <= 0 || rows % tiling::kTileRows || k <= 0 || k % group || num_experts <= 0 || (gate_up && rows % 32))
      fail(ErrorCode::Shape, std::string(entry) + ": rows must be a positive multiple of 16 (32 for w13), K of the group (" +
                                 std::to_string(group) + "), got rows=" + std::to_string(rows) + " K=" + std::to_string(k) +
                                 " experts=" + std::to_string(num_experts));
    device_sm_count();
    tiling::launch_tile_matrices(weights, scales, {rows, k, gate_up != 0, group, f16 != 0}, num_experts, tiled_weights, tiled_scales,
                                 static_cast<cudaStream_t>(stream));
    check_cuda(cudaGetLastError(), "tile_matrices launch");
  });
}

int mxmoe_tile_experts_w4a8_cuda(const uint8_t* weights, const uint8_t* scales, int rows, int k, int gate_up, int num_experts,
                                 uint8_t* tiled_weights, uint8_t* tiled_scales, float* row_factor, int32_t* bases_scratch,
                                 void* stream) {
  return guarded("mxmoe_tile_experts_w4a8_cuda", [&] {
    const char* entry = "mxmoe_tile_experts_w4a8_cuda";
    for (auto [p, name] : {std::pair<const void*, const char*>{weights, "weights"}, {scales, "scales"},
                           {tiled_weights, "tiled_weights"}, {tiled_scales, "tiled_scales"}, {row_factor, "row_factor"},
                           {bases_scratch, "bases_scratch"}})
      require(p, entry, name);
    constexpr int group = 32;  // W4A8 folds MXFP4 weights
    if (rows <= 0 || rows % tiling::kTileRows || k <= 0 || k % group || num_experts <= 0 || (gate_up && rows % 32))
      fail(ErrorCode::Shape, std::string(entry) + ": rows must be a positive multiple of 16 (32 for w13), K of the MXFP4 "
                                 "group (32), got rows=" + std::to_string(rows) + " K=" + std::to_string(k) +
                                 " experts=" + std::to_string(num_experts));
    device_sm_count();
    tiling::launch_tile_matrices_w4a8(weights, scales, {rows, k, gate_up != 0, group, false}, num_experts, bases_scratch,
                                      tiled_weights, tiled_scales, row_factor, static_cast<cudaStream_t>(stream));
    check_cuda(cudaGetLastError(), "tile_matrices_w4a8 launch");
  });
}

namespace {
int workspace_bytes(const char* entry, int E, int H, int I, int num_tokens, int top_k, bool fp8, int64_t* bytes) {
  return guarded(entry, [&] {
    require(bytes, entry, "bytes");
    check_forward_shape(E, num_tokens, top_k);
    *bytes = static_cast<int64_t>(layer::workspace_layout(E, H, I, num_tokens, top_k, fp8).total);
  });
}
}  // namespace

int mxmoe_workspace_bytes(int E, int H, int I, int num_tokens, int top_k, int64_t* bytes) {
  return workspace_bytes("mxmoe_workspace_bytes", E, H, I, num_tokens, top_k, false, bytes);
}

int mxmoe_workspace_bytes_fp8(int E, int H, int I, int num_tokens, int top_k, int64_t* bytes) {
  return workspace_bytes("mxmoe_workspace_bytes_fp8", E, H, I, num_tokens, top_k, true, bytes);
}

int mxmoe_forward_cuda(const mxmoe_weights* w, const mxmoe_activation* act, const void* hidden, const int32_t* ids,
                       const float* topk_weights, void* out, int num_tokens, int top_k, void* workspace,
                       int64_t workspace_bytes, void* stream, int batch_invariant) {
  return guarded("mxmoe_forward_cuda", [&] {
    const char* entry = "mxmoe_forward_cuda";
    require(w, entry, "weights");
    require(act, entry, "activation");
    for (auto [p, name] : {std::pair<const void*, const char*>{w->w13, "w13"}, {w->w13_scale, "w13_scale"}, {w->w2, "w2"},
                           {w->w2_scale, "w2_scale"}})
      layer::check_device_pointer(p, 16, entry, name);
    const bool fp8 = capi::precision_of(*w, entry) == ActivationPrecision::Fp8PerToken;  // its errors first
    const WeightFormat format = capi::format_of(*w);
    const bool has_global = w->w13_global_scale || w->w2_global_scale;
    if (fp8) {
      // W4A8: the factors 2^base of mxmoe_tile_experts_w4a8_cuda ride in the global-scale pointers.
      for (auto [p, name] : {std::pair<const float*, const char*>{w->w13_global_scale, "w13_global_scale"},
                             {w->w2_global_scale, "w2_global_scale"}}) {
        if (!p)
          fail(ErrorCode::InvalidArgument, std::string(entry) + ": " + name + " is null; FP8 activations (W4A8) need the row "
                                               "factors 2^base of mxmoe_tile_experts_w4a8_cuda there (fp32 [E, 2I] and [E, H])");
        layer::check_device_pointer(p, 4, entry, name);
      }
    } else if (format.nvfp4() || has_global) {
      // NVFP4's global scales, or the per-row 2^d factors of MXFP4 scales prepared with a shift: both
      // or neither.
      for (auto [p, name] : {std::pair<const float*, const char*>{w->w13_global_scale, "w13_global_scale"},
                             {w->w2_global_scale, "w2_global_scale"}}) {
        if (!p)
          fail(ErrorCode::InvalidArgument, std::string(entry) + ": " + name +
                                               (format.nvfp4() ? " is null; NVFP4 weights (group 16) need their fp32 global scales"
                                                               : " is null while the other factor tensor is set; MXFP4 weights "
                                                                 "prepared with an E8M0 shift need both (fp32 2^d per row, "
                                                                 "[E, 2I] and [E, H])"));
        layer::check_device_pointer(p, 4, entry, name);
      }
    }
    kernels::GemmFormat gemm_format;
    if (fp8) {
      gemm_format = kernels::choose_gemm_format(format.group_size, false, {}, ActivationPrecision::Fp8PerToken);
    } else if (!format.nvfp4() && has_global) {
      if (w->max_scale_byte < 0 || w->max_scale_byte > kernels::kMaxFastScaleByte)
        fail(ErrorCode::InvalidArgument, std::string(entry) + ": MXFP4 weights with shift factors (w13_global_scale, "
                                             "w2_global_scale) hold prepared E8M0 bytes 0..128, but max_scale_byte is " +
                                             std::to_string(w->max_scale_byte));
      gemm_format = kernels::GemmFormat::Mxfp4Shifted;
    } else {
      // Without factors the bytes are as they are: above 128 only Mxfp4Wide reads them.
      kernels::E8m0ScaleSummary scales;
      if (!format.nvfp4()) scales = {w->max_scale_byte, kernels::kUnknownScaleSpan};
      gemm_format = kernels::choose_gemm_format(format.group_size, format.activation_dtype == DType::F16, scales);
    }
    layer::check_device_pointer(hidden, 16, entry, "hidden");
    layer::check_device_pointer(out, 16, entry, "out");
    layer::check_device_pointer(ids, 4, entry, "topk_ids");
    layer::check_device_pointer(topk_weights, 4, entry, "topk_weights");
    layer::check_device_pointer(workspace, 256, entry, "workspace");
    check_forward_shape(w->num_experts, num_tokens, top_k);
    const layer::WorkspaceLayout ws = layer::workspace_layout(w->num_experts, w->hidden, w->inter, num_tokens, top_k, fp8);
    if (workspace_bytes < static_cast<int64_t>(ws.total))
      fail(ErrorCode::InvalidArgument, std::string(entry) + ": workspace holds " + std::to_string(workspace_bytes) + " bytes, " +
                                           std::to_string(ws.total) + " needed" +
                                           (fp8 ? " (W4A8: mxmoe_workspace_bytes_fp8)" : ""));
    const int sm_count = device_sm_count();
    layer::PreparedWeightsView view{static_cast<const std::uint8_t*>(w->w13), static_cast<const std::uint8_t*>(w->w13_scale),
                                    static_cast<const std::uint8_t*>(w->w2),  static_cast<const std::uint8_t*>(w->w2_scale),
                                    w->w13_bias, w->w2_bias, w->num_experts, w->hidden, w->inter};
    if (gemm_format == kernels::GemmFormat::Mxfp4Shifted || gemm_format == kernels::GemmFormat::Mxfp4E4m3) {
      // MXFP4: the pointers hold per-row factors (Mxfp4Shifted's 2^d, W4A8's 2^base)
      view.w13_row_factor = w->w13_global_scale;
      view.w2_row_factor = w->w2_global_scale;
    } else {
      view.w13_global_scale = w->w13_global_scale;
      view.w2_global_scale = w->w2_global_scale;
    }
    view.format = gemm_format;
    layer::launch_forward(view, capi::activation_of(*act), GemmTile::Auto, sm_count, workspace, ws,
                          {hidden, ids, topk_weights, out, num_tokens, top_k, batch_invariant != 0},
                          static_cast<cudaStream_t>(stream));
    check_cuda(cudaGetLastError(), "forward launch");
  });
}

int mxmoe_route_cuda(const float* logits, const float* correction_bias, int num_tokens, int num_experts,
                     const mxmoe_routing* routing, int32_t* ids, float* weights, void* stream) {
  return guarded("mxmoe_route_cuda", [&] {
    const char* entry = "mxmoe_route_cuda";
    require(routing, entry, "routing");
    layer::check_device_pointer(logits, 4, entry, "router_logits");
    layer::check_device_pointer(ids, 4, entry, "topk_ids");
    layer::check_device_pointer(weights, 4, entry, "topk_weights");
    const RoutingConfig config = capi::routing_of(*routing, num_experts);
    if (config.top_k > kernels::kMaxRoutingTopK)
      fail(ErrorCode::Unsupported, std::string(entry) + ": top_k above " + std::to_string(kernels::kMaxRoutingTopK));
    device_sm_count();
    kernels::launch_routing(logits, correction_bias, num_tokens, num_experts, config, ids, weights,
                            static_cast<cudaStream_t>(stream));
    check_cuda(cudaGetLastError(), "routing launch");
  });
}

}  // extern "C"
