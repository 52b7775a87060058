// libFuzzer target: any bytes as a safetensors file, then every MoE layer found is resolved, loaded
// (or quantized, to MXFP4 and to NVFP4) and written back in each layout, ModelOpt's NVFP4 one included.
// Refusals are mxmoe::Error; anything else is a bug.
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
        std::vector<mxmoe::LoadedMoeLayer> layers;
        if (mxmoe::layout_is_quantized(ref.layout)) {
          layers.push_back(mxmoe::load_moe_layer(ckpt, ref));
        } else {
          layers.push_back(mxmoe::quantize_moe_layer(ckpt, ref, &dense));
          try {
            layers.push_back(mxmoe::quantize_moe_layer(ckpt, ref, nullptr, mxmoe::WeightFormat::nvfp4_with(mxmoe::DType::BF16)));
          } catch (const mxmoe::Error&) {
          }
        }
        for (const auto& layer : layers)
          for (auto layout : {mxmoe::MoeLayout::DeepSeekV4, mxmoe::MoeLayout::Fused, mxmoe::MoeLayout::GptOss,
                              mxmoe::MoeLayout::ModelOpt}) {
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
