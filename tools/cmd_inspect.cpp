// mxmoe inspect: the MoE layers of a checkpoint, the layout detected and which alias matched what;
// with --act fp8, what the W4A8 weight fold would re-quantise in each layer.
#include <iomanip>
#include <iostream>
#include <sstream>

#include "command.hpp"
#include "mxmoe/checkpoint.hpp"
#include "mxmoe/config.hpp"
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

std::string fold_line(const char* tensor, const W4a8FoldCounts& c) { return std::string("    ") + tensor + ": " + describe_fold(c) + "\n"; }

// --act fp8: for every MoE layer, the groups the W4A8 fold (MXFP4 weights to E4M3 with a per-row base
// exponent) cannot represent exactly: those whose E8M0 exponent lies more than 14 below the largest of
// their row. They are re-quantised to the nearest E4M3 when the layer runs with FP8 activations.
void print_fp8_fold(const Checkpoint& ckpt, const std::vector<MoeLayerRef>& layers) {
  std::cout << "\nW4A8 (--act fp8): groups of 32 whose scale lies more than 14 exponents below their row's largest are\n"
               "re-quantised to the nearest E4M3 (the rest fold exactly)\n";
  for (const auto& r : layers) {
    std::cout << "  layer " << r.layer << ":";
    if (!layout_is_quantized(r.layout)) {
      std::cout << " unquantized (W4A8 folds MXFP4 weights: run `mxmoe quantize` first)\n";
      continue;
    }
    const LoadedMoeLayer l = load_moe_layer(ckpt, r);
    if (l.weights.format.nvfp4()) {
      std::cout << " NVFP4: W4A8 needs MXFP4 weights (not supported)\n";
      continue;
    }
    const W4a8FoldReport rep = w4a8_fold_report(l.weights);
    std::cout << "\n" << fold_line("w13", rep.w13) << fold_line("w2 ", rep.w2);
  }
}

// `layer` < 0 when --layer was not given.
int run_inspect(const std::string& path, int layer, bool layer_given, ActivationPrecision act) {
  if (layer_given && layer < 0) fail(ErrorCode::InvalidArgument, "--layer must be a layer number >= 0, got " + std::to_string(layer));
  const Checkpoint ckpt = Checkpoint::open(path);
  const auto layers = find_moe_layers(ckpt);
  std::cout << "checkpoint " << path << ": " << ckpt.files().size() << " file(s), " << ckpt.tensor_names().size() << " tensors, "
            << layers.size() << " MoE layer(s)\n";
  for (const auto& r : layers)
    std::cout << "  layer " << r.layer << ": " << moe_layout_name(r.layout) << ", '" << r.module_prefix << "experts.', "
              << r.num_experts << " experts" << (layout_is_quantized(r.layout) ? "" : " (unquantized: run `mxmoe quantize`)") << "\n";
  if (act == ActivationPrecision::Fp8PerToken) print_fp8_fold(ckpt, layers);
  if (layers.empty() && !layer_given) return 0;
  // Details (a full, validated load) of the chosen layer (an error listing those there are when it does
  // not exist), or of the first MXFP4 layer.
  MoeLayerRef ref = layers.empty() ? MoeLayerRef{} : layers.front();
  if (layer_given) {
    ref = find_moe_layer(ckpt, layer);
  } else {
    for (const auto& r : layers)
      if (layout_is_quantized(r.layout)) {
        ref = r;
        break;
      }
  }
  std::cout << "\n";
  print_layer(layout_is_quantized(ref.layout) ? load_moe_layer(ckpt, ref) : quantize_moe_layer(ckpt, ref));
  return 0;
}

const RegisterCommand kInspect{
    "inspect", "list the MoE layers of a safetensors checkpoint (file, index or directory): layout, names, shapes", 20,
    [](CLI::App& sub) {
      auto path = std::make_shared<std::string>();
      auto layer = std::make_shared<int>(-1);
      auto act = std::make_shared<std::string>("bf16");
      sub.add_option("path", *path, "a .safetensors file, a model.safetensors.index.json, or a directory")->required();
      CLI::Option* layer_opt = sub.add_option("--layer", *layer, "show the details of this layer (default: the first MXFP4 layer)");
      sub.add_option("--act", *act,
                     "activation precision: bf16 (default) or fp8, which also reports per layer and tensor how many MXFP4 groups "
                     "the W4A8 weight fold would re-quantise (count and percentage)");
      return [path, layer, layer_opt, act] { return run_inspect(*path, *layer, layer_opt->count() > 0, parse_activation_precision(*act)); };
    }};

}  // namespace
}  // namespace mxmoe::cli
