// mxmoe quantize: bf16/f32 experts (or MXFP4 in another layout) to an MXFP4 checkpoint.
#include <iostream>

#include "command.hpp"
#include "mxmoe/checkpoint.hpp"

namespace mxmoe::cli {
namespace {

constexpr std::uint64_t kProgressFrom = 64ull << 20;  // files smaller than this finish too fast for a bar

void draw_bar(std::uint64_t done, std::uint64_t total) {
  const int width = 40;
  const int filled = total ? static_cast<int>(width * done / total) : width;
  std::cerr << "\r[" << std::string(filled, '#') << std::string(width - filled, ' ') << "] " << (total ? 100 * done / total : 100)
            << "% of " << (total >> 20) << " MiB" << std::flush;
}

int run_quantize(const std::string& in, const std::string& out, const std::string& layout_name, bool force) {
  const MoeLayout layout = parse_mxfp4_layout(layout_name);
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
  const QuantizeSummary s = quantize_checkpoint(ckpt, out, layout, progress, force);
  if (drew) std::cerr << "\n";
  std::cout << "wrote " << out << " (" << moe_layout_name(layout) << "): " << s.layers_quantized << " layer(s) quantized, "
            << s.layers_converted << " converted, " << s.tensors_copied << " other tensor(s) copied, " << s.bytes_written
            << " data bytes\n";
  return 0;
}

const RegisterCommand kQuantize{
    "quantize", "write an MXFP4 checkpoint (dsv4, fused or gpt-oss names) from bf16/f32 or MXFP4 experts", 30, [](CLI::App& sub) {
      auto in = std::make_shared<std::string>();
      auto out = std::make_shared<std::string>();
      auto layout = std::make_shared<std::string>();
      auto force = std::make_shared<bool>(false);
      sub.add_option("in", *in, "input checkpoint: .safetensors file, index or directory")->required();
      sub.add_option("out", *out, "output .safetensors file")->required();
      sub.add_option("--layout", *layout, "dsv4 | fused | gpt-oss")->required();
      sub.add_flag("--force", *force, "replace OUT if it exists (never when OUT is one of the input's files)");
      sub.footer(
          "OUT is written under a unique temporary name in its folder and renamed into place when complete;\n"
          "on any error only that temporary is removed. OUT may not be a file of the input (checked by inode),\n"
          "nor a .safetensors inside a model folder that has no model.safetensors.index.json.");
      return [in, out, layout, force] { return run_quantize(*in, *out, *layout, *force); };
    }};

}  // namespace
}  // namespace mxmoe::cli
