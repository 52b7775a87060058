// mxmoe inspect: the MoE layers of a checkpoint, the layout detected and which alias matched what.
#include <iomanip>
#include <iostream>

#include "command.hpp"
#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::cli {
namespace {

void print_layer(const LoadedMoeLayer& l) {
  const auto& w = l.weights;
  std::cout << "layer " << l.ref.layer << " ('" << l.ref.module_prefix << "experts.'): layout " << moe_layout_name(l.ref.layout)
            << "\n  E=" << w.num_experts << " H=" << w.hidden << " I=" << w.inter << ", format "
            << (w.format.nvfp4() ? "NVFP4 (group 16, UE4M3 + global scales)" : "MXFP4 (group 32, E8M0)") << ", scales " << l.scale_format << "\n";
  for (const auto& m : l.matches)
    std::cout << "  " << std::left << std::setw(18) << m.role << " <- " << m.name << "  [alias " << m.alias << "] " << m.dtype << " "
              << shape_str(m.shape) << (m.zero_copy ? " (zero-copy)" : "") << "\n";
  if (!w.router_weight) std::cout << "  (no router weight)\n";
  if (l.router_logit_bias) std::cout << "  note: router_logit_bias is added to the router logits (gpt-oss), not a correction bias\n";
}

// `layer` < 0 when --layer was not given.
int run_inspect(const std::string& path, int layer, bool layer_given) {
  if (layer_given && layer < 0) fail(ErrorCode::InvalidArgument, "--layer must be a layer number >= 0, got " + std::to_string(layer));
  const Checkpoint ckpt = Checkpoint::open(path);
  const auto layers = find_moe_layers(ckpt);
  std::cout << "checkpoint " << path << ": " << ckpt.files().size() << " file(s), " << ckpt.tensor_names().size() << " tensors, "
            << layers.size() << " MoE layer(s)\n";
  for (const auto& r : layers)
    std::cout << "  layer " << r.layer << ": " << moe_layout_name(r.layout) << ", '" << r.module_prefix << "experts.', "
              << r.num_experts << " experts" << (layout_is_mxfp4(r.layout) ? "" : " (unquantized: run `mxmoe quantize`)") << "\n";
  if (layers.empty() && !layer_given) return 0;
  // Details (a full, validated load) of the chosen layer (an error listing those there are when it does
  // not exist), or of the first MXFP4 layer.
  MoeLayerRef ref = layers.empty() ? MoeLayerRef{} : layers.front();
  if (layer_given) {
    ref = find_moe_layer(ckpt, layer);
  } else {
    for (const auto& r : layers)
      if (layout_is_mxfp4(r.layout)) {
        ref = r;
        break;
      }
  }
  std::cout << "\n";
  print_layer(layout_is_mxfp4(ref.layout) ? load_moe_layer(ckpt, ref) : quantize_moe_layer(ckpt, ref));
  return 0;
}

const RegisterCommand kInspect{
    "inspect", "list the MoE layers of a safetensors checkpoint (file, index or directory): layout, names, shapes", 20,
    [](CLI::App& sub) {
      auto path = std::make_shared<std::string>();
      auto layer = std::make_shared<int>(-1);
      sub.add_option("path", *path, "a .safetensors file, a model.safetensors.index.json, or a directory")->required();
      CLI::Option* layer_opt = sub.add_option("--layer", *layer, "show the details of this layer (default: the first MXFP4 layer)");
      return [path, layer, layer_opt] { return run_inspect(*path, *layer, layer_opt->count() > 0); };
    }};

}  // namespace
}  // namespace mxmoe::cli
