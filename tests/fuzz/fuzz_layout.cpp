// libFuzzer target: any bytes as a safetensors file, then every MoE layer found is resolved, loaded
// (or quantized) and written back in each MXFP4 layout. Refusals are mxmoe::Error; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const mxmoe::Checkpoint ckpt = mxmoe::Checkpoint::from_memory("fuzz", std::vector<std::uint8_t>(data, data + size));
    for (const auto& ref : mxmoe::find_moe_layers(ckpt)) {
      try {
        mxmoe::reference::DenseExpertWeights dense;  // dense layers also hand back their float rows (verify --source)
        const mxmoe::LoadedMoeLayer layer =
            mxmoe::layout_is_mxfp4(ref.layout) ? mxmoe::load_moe_layer(ckpt, ref) : mxmoe::quantize_moe_layer(ckpt, ref, &dense);
        for (auto layout : {mxmoe::MoeLayout::DeepSeekV4, mxmoe::MoeLayout::Fused, mxmoe::MoeLayout::GptOss}) {
          try {
            mxmoe::moe_layer_tensors(layer, layout, ref.module_prefix);
          } catch (const mxmoe::Error&) {
          }
        }
      } catch (const mxmoe::Error&) {
      }
    }
  } catch (const mxmoe::Error&) {
  }
  return 0;
}
