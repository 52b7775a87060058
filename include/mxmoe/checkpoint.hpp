// MoE layers of checkpoints: found and loaded under every naming in use (the alias table), quantized,
// and written in any MXFP4 layout. The files themselves: mxmoe/safetensors.hpp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "mxmoe/safetensors.hpp"
#include "mxmoe/tensor.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe {

namespace reference {
struct DenseExpertWeights;  // mxmoe/reference.hpp
}

// ---------------------------------------------------------------- MoE layers

enum class MoeLayout {
  DeepSeekV4,    // per expert: experts.e.w1/w2/w3.weight (packed E2M1) + .scale (E8M0)
  Fused,         // experts.w13_weight, w13_weight_scale | w13_weight_scale_inv, w13_weight_bias | w13_bias, w2_...
  GptOss,        // experts.gate_up_proj_blocks/_scales/_bias (gate/up rows interleaved), down_proj_...
  DensePerExpert,  // unquantized: experts.e.w1/w3/w2.weight or experts.e.gate_proj/up_proj/down_proj.weight
  DenseFused,      // unquantized: experts.w13_weight [E, 2I, H], experts.w2_weight [E, H, I]
  DenseGptOss,     // unquantized Hugging Face gpt-oss: experts.gate_up_proj [E, H, 2I] (gate/up interleaved), down_proj [E, I, H]
  ModelOpt,        // NVIDIA ModelOpt per expert: experts.e.gate_proj/up_proj/down_proj .weight, .weight_scale, .weight_scale_2
};
// dsv4, fused and modelopt hold MXFP4 or NVFP4 (told by the scales: E8M0 per 32, or F8_E4M3 per 16 with
// weight_scale_2 global scales); gpt-oss holds MXFP4 only.
const char* moe_layout_name(MoeLayout layout);  // "dsv4", "fused", "gpt-oss", "dense-per-expert", "dense-fused", "dense-gpt-oss", "modelopt"
// Accepts the quantized layouts' names (dsv4, fused, gpt-oss, modelopt); mxmoe::Error listing them otherwise.
MoeLayout parse_mxfp4_layout(const std::string& name);
// True for the layouts that hold quantized experts (MXFP4 or NVFP4), false for the dense ones.
bool layout_is_quantized(MoeLayout layout);

// One MoE layer found in a checkpoint by its names.
struct MoeLayerRef {
  int layer = -1;
  MoeLayout layout = MoeLayout::Fused;
  std::string module_prefix;   // everything before "experts.", e.g. "model.layers.3.mlp."
  int num_experts = 0;         // counted from the names (per-expert layouts) or the first dim
};

// Every MoE layer of the checkpoint, sorted by layer number.
std::vector<MoeLayerRef> find_moe_layers(const Checkpoint& ckpt);
// The MoE layer numbered `layer`; NotFound listing the layers there are, InvalidArgument when two
// module paths share the number.
MoeLayerRef find_moe_layer(const Checkpoint& ckpt, int layer);

// Which checkpoint tensor filled which canonical role, and under which alias.
struct TensorMatch {
  std::string role;       // "w13", "w13_scale", ..., "router_weight"
  std::string name;       // the tensor's name ("{e}" standing for the expert index in per-expert layouts)
  std::string alias;      // the alias of the table that matched
  std::string dtype;      // as stored
  Shape shape;            // as stored (of expert 0 for per-expert tensors)
  bool zero_copy = false; // the canonical tensor is a view of the mapped file
};

struct LoadedMoeLayer {
  MoeLayerRef ref;
  CanonicalMoeWeights weights;
  std::string scale_format;  // "E8M0", "float32 (exact powers of two, converted to E8M0)" or "NVFP4: UE4M3 per 16 ..."
  std::vector<TensorMatch> matches;
  // gpt-oss router.bias F32 [E]: added to the router logits (unlike a correction bias, it changes the
  // routing weights too). Not part of CanonicalMoeWeights, whose correction_bias only steers selection.
  std::optional<HostTensor> router_logit_bias;
};

// Loads an MXFP4 layer as canonical weights (validated). Errors name the tensor and what is wrong:
// missing tensors, wrong shapes or dtypes, NaN scales (0xFF or float NaN), float scales that are not
// exact powers of two. Unquantized layers are refused with a pointer to `mxmoe quantize`.
LoadedMoeLayer load_moe_layer(const Checkpoint& ckpt, const MoeLayerRef& ref);
LoadedMoeLayer load_moe_layer(const Checkpoint& ckpt, int layer);

// Quantizes an unquantized layer (bf16/f16/f32 experts) to canonical MXFP4 by the OCP rule, or to NVFP4
// (`format` group 16) by NVIDIA ModelOpt's rule (per matrix: global = amax / (6 x 448); per 16: UE4M3
// scale = amax16 / (6 x global); codes = e2m1(x / (scale x global))); NVFP4 activations are fp16 when
// `format` or the checkpoint's config.json (torch_dtype float16) says so, bf16 otherwise. With
// `dense`, it also receives the unquantized expert weights in canonical order (float32), the layer
// `mxmoe verify --source` measures the quantisation error against.
LoadedMoeLayer quantize_moe_layer(const Checkpoint& ckpt, const MoeLayerRef& ref, reference::DenseExpertWeights* dense = nullptr,
                                  const WeightFormat& format = WeightFormat::mxfp4());

// The tensors that store `layer` in an MXFP4 layout under `module_prefix` (e.g. "model.layers.3.mlp."):
// weights U8 (F4 for dsv4), scales F8_E8M0 (U8 for gpt-oss), biases and router F32.
std::vector<std::pair<std::string, HostTensor>> moe_layer_tensors(const LoadedMoeLayer& layer, MoeLayout layout,
                                                                 const std::string& module_prefix);

// Writes one safetensors file holding every MoE layer of `in` in `layout` (unquantized layers quantized
// by the OCP rule or, for NVFP4, ModelOpt's; quantized layers converted losslessly) and every other tensor copied as it is.
// `progress(done_bytes, total_bytes)` is called as it writes.
struct QuantizeSummary {
  int layers_quantized = 0;
  int layers_converted = 0;
  int tensors_copied = 0;
  std::uint64_t bytes_written = 0;
};
// The input is never harmed: an OUT that is one of its files (by inode), a folder, or a .safetensors
// that would join a model folder read without an index is refused, as is an existing OUT unless
// `overwrite` (checkpoint/output_check.hpp); the file is written under a unique temporary name and
// renamed into place when complete.
// `format`: MXFP4 (the default) or NVFP4 (group 16; written as modelopt or fused). Quantized layers
// are converted between layouts only within their format (an NVFP4 layer is not turned into MXFP4, nor
// the reverse: InvalidArgument naming the layer).
QuantizeSummary quantize_checkpoint(const Checkpoint& in, const std::string& out_path, MoeLayout layout,
                                    const std::function<void(std::uint64_t, std::uint64_t)>& progress = {},
                                    bool overwrite = false, const WeightFormat& format = WeightFormat::mxfp4());

}  // namespace mxmoe
