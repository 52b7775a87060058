// mxmoe quantize: bf16/f32 experts (or a quantized layer in another layout) to an MXFP4 or NVFP4 checkpoint.
#include <iostream>

#include "command.hpp"
#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::cli {
namespace {

constexpr std::uint64_t kProgressFrom = 64ull << 20;  // files smaller than this finish too fast for a bar

void draw_bar(std::uint64_t done, std::uint64_t total) {
  const int width = 40;
  const int filled = total ? static_cast<int>(width * done / total) : width;
  std::cerr << "\r[" << std::string(filled, '#') << std::string(width - filled, ' ') << "] " << (total ? 100 * done / total : 100)
            << "% of " << (total >> 20) << " MiB" << std::flush;
}

int run_quantize(const std::string& in, const std::string& out, std::string layout_name, const std::string& format_name, bool force) {
  if (format_name != "mxfp4" && format_name != "nvfp4")
    fail(ErrorCode::InvalidArgument, "--format must be mxfp4 or nvfp4, got '" + format_name + "'");
  const bool nv = format_name == "nvfp4";
  if (layout_name.empty()) {
    if (!nv) fail(ErrorCode::InvalidArgument, "--layout is required for --format mxfp4 (dsv4, fused or gpt-oss)");
    layout_name = "modelopt";  // NVIDIA ModelOpt's per-expert names
  }
  const MoeLayout layout = parse_mxfp4_layout(layout_name);
  if (nv && layout != MoeLayout::ModelOpt && layout != MoeLayout::Fused)
    fail(ErrorCode::InvalidArgument, "--format nvfp4 is written as --layout modelopt (the default) or fused, not " + layout_name);
  const WeightFormat format = nv ? WeightFormat::nvfp4_with(DType::BF16) : WeightFormat::mxfp4();
  const Checkpoint ckpt = Checkpoint::open(in);
  int last_percent = -1;
  bool drew = false;
  auto progress = [&](std::uint64_t done, std::uint64_t total) {
    if (total < kProgressFrom) return;
    const int percent = static_cast<int>(100 * done / total);
    if (percent == last_percent) return;
    last_percent = percent;
    drew = true;
    draw_bar(done, total);
  };
  const QuantizeSummary s = quantize_checkpoint(ckpt, out, layout, progress, force, format);
  if (drew) std::cerr << "\n";
  std::cout << "wrote " << out << " (" << format_name << ", " << moe_layout_name(layout) << "): " << s.layers_quantized << " layer(s) quantized, "
            << s.layers_converted << " converted, " << s.tensors_copied << " other tensor(s) copied, " << s.bytes_written
            << " data bytes\n";
  return 0;
}

const RegisterCommand kQuantize{
    "quantize", "write an MXFP4 (dsv4, fused or gpt-oss names) or NVFP4 (ModelOpt names) checkpoint from bf16/f32 or quantized experts", 30,
    [](CLI::App& sub) {
      auto in = std::make_shared<std::string>();
      auto out = std::make_shared<std::string>();
      auto layout = std::make_shared<std::string>();
      auto format = std::make_shared<std::string>("mxfp4");
      auto force = std::make_shared<bool>(false);
      sub.add_option("in", *in, "input checkpoint: .safetensors file, index or directory")->required();
      sub.add_option("out", *out, "output .safetensors file")->required();
      sub.add_option("--layout", *layout, "dsv4 | fused | gpt-oss | modelopt (required for mxfp4; nvfp4: modelopt (default) | fused)");
      sub.add_option("--format", *format,
                     "mxfp4 (default: E8M0 per 32, the OCP rule) | nvfp4 (F8_E4M3 per 16 + F32 weight_scale_2 per matrix, NVIDIA "
                     "ModelOpt's rule; activations bf16, or fp16 when the input's config.json says torch_dtype float16)");
      sub.add_flag("--force", *force, "replace OUT if it exists (never when OUT is one of the input's files)");
      sub.footer(
          "OUT is written under a unique temporary name in its folder and renamed into place when complete;\n"
          "on any error only that temporary is removed. OUT may not be a file of the input (checked by inode),\n"
          "nor a .safetensors inside a model folder that has no model.safetensors.index.json.");
      return [in, out, layout, format, force] { return run_quantize(*in, *out, *layout, *format, *force); };
    }};

}  // namespace
}  // namespace mxmoe::cli
