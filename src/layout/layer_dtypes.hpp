// The dtypes a layer's weight tensors must have: all packed E2M1 (an MXFP4 layer) or all float (a dense
// layer that `quantize` turns into MXFP4). Checked before a layer is loaded, so a layer with a tensor of
// the wrong kind is named by that tensor, not by whichever tensor a loader happens to read next.
#pragma once

#include <string>

#include "mxmoe/checkpoint.hpp"

namespace mxmoe::layout {

bool is_packed_dtype(const std::string& dtype_name);  // U8, I8, F4: packed E2M1 pairs
bool is_float_dtype_name(const std::string& dtype_name);  // BF16, F16, F32: weights to quantize

// DType error unless every weight tensor of `ref` (every expert of per-expert layouts) has the kind its
// layout wants. The message names the layer, the tensor at fault with its dtype, and the anchor whose
// dtype fixed the layer's kind: "expert 3's '...experts.3.w1.weight' is BF16 while ... is F4".
void check_layer_dtypes(const Checkpoint& ckpt, const MoeLayerRef& ref);

}  // namespace mxmoe::layout
