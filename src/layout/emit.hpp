// Canonical weights back to the tensors of an MXFP4 layout: names (first alias of the table), dtypes,
// shapes, and the bytes of each.
#pragma once

#include <string>
#include <vector>

#include "layout/alias_table.hpp"
#include "mxmoe/checkpoint.hpp"

namespace mxmoe::layout {

// What a layer's output tensors depend on, known before the layer is quantized.
struct LayerOutputSpec {
  std::int64_t E = 0, H = 0, I = 0;
  bool w13_bias = false, w2_bias = false, router_weight = false, correction_bias = false, router_logit_bias = false;
  DType router_dtype = DType::F32;  // the router weight's stored dtype (BF16, F16, F32), kept in the output
  WeightFormat format;              // MXFP4 (E8M0 per 32) or NVFP4 (F8_E4M3 per 16 + F32 global scales)
  bool operator==(const LayerOutputSpec& o) const;
};
LayerOutputSpec output_spec(const LoadedMoeLayer& layer);
// From the names and shapes alone (no quantization, no copies) for dense layers; by loading for MXFP4 ones.
LayerOutputSpec probe_output_spec(const Checkpoint& ckpt, const MoeLayerRef& ref);

struct PlannedTensor {
  SafetensorsWriter::Entry entry;
  Role role;
  int expert;  // -1 for tensors of the whole layer
};
// Unsupported when the layout has no place for a tensor the layer holds (a router logit bias outside
// gpt-oss, a correction bias in gpt-oss) or for its format (NVFP4 is written as modelopt or fused).
std::vector<PlannedTensor> plan_layer(const LayerOutputSpec& shape, MoeLayout layout, const std::string& module_prefix);
// The bytes of `planned` for `layer` (whose output_spec must be the planned one).
HostTensor layer_tensor(const LoadedMoeLayer& layer, MoeLayout layout, const PlannedTensor& planned);

// Every tensor name of the layer as it is stored in `ckpt` (all experts, all aliases present).
std::vector<std::string> layer_tensor_names(const Checkpoint& ckpt, const MoeLayerRef& ref);

}  // namespace mxmoe::layout
