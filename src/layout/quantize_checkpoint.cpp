// quantize_checkpoint: every MoE layer written in one MXFP4 layout (quantized when it was bf16/f32,
// converted when it was MXFP4 already), every other tensor copied byte for byte.
#include <set>

#include "checkpoint/output_check.hpp"
#include "layout/completeness.hpp"
#include "layout/emit.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {

QuantizeSummary quantize_checkpoint(const Checkpoint& in, const std::string& out_path, MoeLayout layout,
                                    const std::function<void(std::uint64_t, std::uint64_t)>& progress, bool overwrite,
                                    const WeightFormat& format) {
  if (!layout_is_quantized(layout)) fail(ErrorCode::InvalidArgument, std::string("cannot write layout ") + moe_layout_name(layout));
  validate_layer_formats(format);
  // The format dense layers are written in: NVFP4's activation dtype from config.json unless fp16 was asked
  // (quantize_moe_layer's rule).
  WeightFormat dense_format = format;
  if (format.nvfp4() && format.activation_dtype != DType::F16) dense_format.activation_dtype = layout::config_activation_dtype(in);
  checkpoint::check_output_spares_input(in, out_path, overwrite);  // before any work
  const auto layers = find_moe_layers(in);
  if (layers.empty()) fail(ErrorCode::NotFound, "checkpoint '" + in.path() + "' holds no MoE layer in a known layout");

  // Plan: the output header is fixed before any layer is quantized, so layers stream one at a time.
  std::set<std::string> consumed;
  std::vector<std::vector<layout::PlannedTensor>> plans;
  std::vector<layout::LayerOutputSpec> shapes;
  for (const auto& ref : layers) {
    for (auto& name : layout::layer_tensor_names(in, ref)) consumed.insert(std::move(name));
    shapes.push_back(layout::probe_output_spec(in, ref));
    if (!layout_is_quantized(ref.layout)) {
      shapes.back().format = dense_format;
    } else if (shapes.back().format.nvfp4() != format.nvfp4()) {
      fail(ErrorCode::InvalidArgument, "layer " + std::to_string(ref.layer) + " ('" + ref.module_prefix + "experts.') is " +
                                           (shapes.back().format.nvfp4() ? "NVFP4" : "MXFP4") + " and cannot be converted to " +
                                           (format.nvfp4() ? "NVFP4" : "MXFP4") + " without loss; write it with --format " +
                                           (shapes.back().format.nvfp4() ? "nvfp4" : "mxfp4"));
    }
    plans.push_back(layout::plan_layer(shapes.back(), layout, ref.module_prefix));
  }
  std::vector<SafetensorsWriter::Entry> entries;
  std::vector<std::string> copied;
  for (const auto& name : in.tensor_names()) {
    if (consumed.count(name)) continue;
    // Copied as stored: same header dtype (BOOL, F8_E5M2, ... included), same shape, same bytes.
    const TensorInfo& info = in.info(name);
    entries.push_back({name, info.dtype.value_or(DType::U8), info.shape, info.dtype_name});
    copied.push_back(name);
  }
  for (const auto& plan : plans)
    for (const auto& p : plan) entries.push_back(p.entry);

  SafetensorsWriter writer(out_path, entries, {{"format", "pt"}, {"mxmoe_layout", moe_layout_name(layout)}, {"mxmoe_format", format.nvfp4() ? "nvfp4" : "mxfp4"}}, overwrite);
  auto report = [&] {
    if (progress) progress(writer.written_bytes(), writer.total_bytes());
  };
  QuantizeSummary summary;
  for (const auto& name : copied) {
    const TensorInfo& info = in.info(name);
    const HostTensor t = in.view_as(name, DType::U8, {static_cast<std::int64_t>(info.end - info.begin)});
    writer.append(t.data(), t.nbytes());
    report();
  }
  summary.tensors_copied = static_cast<int>(copied.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const bool dense = !layout_is_quantized(layers[i].layout);
    const LoadedMoeLayer layer = dense ? quantize_moe_layer(in, layers[i], nullptr, format) : load_moe_layer(in, layers[i]);
    if (!(layout::output_spec(layer) == shapes[i]))
      fail(ErrorCode::Shape, "layer " + std::to_string(layers[i].layer) + " ('" + layers[i].module_prefix + "experts.'): its tensors disagree on E, H or I");
    for (const auto& p : plans[i]) {
      const HostTensor t = layout::layer_tensor(layer, layout, p);
      writer.append(t.data(), t.nbytes());
      report();
    }
    if (dense) ++summary.layers_quantized;
    else ++summary.layers_converted;
  }
  writer.finish();
  summary.bytes_written = writer.total_bytes();
  return summary;
}

}  // namespace mxmoe
