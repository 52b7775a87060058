// Checkpoints: safetensors files read through a memory map (zero-copy views), sharded models through
// model.safetensors.index.json, MoE layers found and loaded under every naming in use, and a writer.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mxmoe/tensor.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe {

namespace reference {
struct DenseExpertWeights;  // mxmoe/reference.hpp
}

// ---------------------------------------------------------------- reading safetensors

// One tensor as its file's header describes it.
struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as written in the header: "BF16", "F8_E8M0", "F4", ...
  std::optional<DType> dtype;  // empty for spec dtypes mxmoe does not compute with (BOOL, U16, F8_E5M2, ...)
  Shape shape;                 // element counts (for F4: 4-bit elements, two per byte)
  std::string file;            // the file (or in-memory label) that holds it
  std::uint64_t begin = 0;     // byte range inside the file's data section
  std::uint64_t end = 0;
};

// A safetensors file, a sharded model (model.safetensors.index.json), or a directory holding either.
// Every header is validated on open; tensors are views of the mapped files, which stay mapped as
// long as the Checkpoint or any view of it lives.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path);
  // A whole safetensors file held in memory (tests, the fuzzer); `label` names it in errors.
  static Checkpoint from_memory(const std::string& label, std::vector<std::uint8_t> bytes);

  const std::string& path() const;
  const std::vector<std::string>& files() const;
  // The model.safetensors.index.json read ("" when none), the folder the checkpoint lives in (where a
  // config.json describes the model), and whether it was opened as a folder without an index (then
  // every *.safetensors in it belongs to it, so a new one there would change the checkpoint).
  const std::string& index_path() const;
  const std::string& directory() const;
  bool is_directory_scan() const;
  std::vector<std::string> tensor_names() const;  // sorted
  bool contains(const std::string& name) const;
  // The header entry; mxmoe::Error (NotFound) naming the tensor and the checkpoint when absent.
  const TensorInfo& info(const std::string& name) const;
  // The tensor's bytes as stored, no copy. Unsupported for dtypes outside mxmoe::DType.
  HostTensor view(const std::string& name) const;
  // The same bytes under another dtype/shape of the same byte count (packed F4 as U8 rows, say).
  HostTensor view_as(const std::string& name, DType dtype, const Shape& shape) const;
  // __metadata__ of every file, merged.
  const std::map<std::string, std::string>& metadata() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// Installs a SIGBUS handler so that a mapped checkpoint file that shrinks while it is read (truncated
// or rewritten by another program) ends the process with one line naming the file and exit status 2,
// instead of a crash; unfinished outputs' temporaries are removed first. A SIGBUS at any other address
// keeps its default action. For programs (the CLI calls it first thing); a library leaves signals alone.
void install_mapped_file_guard();

// Parses and validates the header of a whole safetensors image `data` [0, size) without keeping it:
// the header length, JSON, dtypes, shapes and data offsets (inside the data section, consistent with
// shape x dtype, no overlap, no hole). Throws mxmoe::Error naming `label`, the tensor and the fault.
std::vector<TensorInfo> parse_safetensors_header(const std::uint8_t* data, std::size_t size, const std::string& label);

// ---------------------------------------------------------------- writing safetensors

// Writes a safetensors file sequentially: the header is fixed by the entries given up front, then each
// tensor's bytes are appended in that order. The bytes go to a fresh temporary of a unique name in the
// output's folder (mkstemp: no user file is ever reused); the file appears by an atomic rename only when
// finish() succeeds, and an unfinished writer deletes its temporary and nothing else. With
// `replace_existing` false an existing `path` is refused, at construction and again atomically at the
// rename (renameat2 RENAME_NOREPLACE, or link + unlink where the file system lacks it).
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    // The header dtype of a tensor copied through whose dtype mxmoe does not compute with ("BOOL",
    // "F8_E5M2", ...; any dtype of the format): its size follows from it and `dtype` is ignored.
    std::string stored_dtype = {};
  };
  SafetensorsWriter(const std::string& path, std::vector<Entry> entries,
                    const std::map<std::string, std::string>& metadata = {}, bool replace_existing = true);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Bytes of the next tensor (or part of them); refuses more bytes than the entries declared.
  void append(const void* data, std::size_t nbytes);
  void finish();
  std::uint64_t total_bytes() const { return total_; }
  std::uint64_t written_bytes() const { return written_; }

 private:
  std::string path_, tmp_path_;
  std::vector<Entry> entries_;
  std::vector<std::uint64_t> ends_;
  std::uint64_t total_ = 0, written_ = 0;
  std::FILE* out_ = nullptr;
  bool finished_ = false;
  bool replace_existing_ = true;
};

// Writes named tensors in the order given.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, HostTensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// ---------------------------------------------------------------- MoE layers

enum class MoeLayout {
  DeepSeekV4,    // per expert: experts.e.w1/w2/w3.weight (packed E2M1) + .scale (E8M0)
  Fused,         // experts.w13_weight, w13_weight_scale | w13_weight_scale_inv, w13_weight_bias | w13_bias, w2_...
  GptOss,        // experts.gate_up_proj_blocks/_scales/_bias (gate/up rows interleaved), down_proj_...
  DensePerExpert,  // unquantized: experts.e.w1/w3/w2.weight or experts.e.gate_proj/up_proj/down_proj.weight
  DenseFused,      // unquantized: experts.w13_weight [E, 2I, H], experts.w2_weight [E, H, I]
  DenseGptOss,     // unquantized Hugging Face gpt-oss: experts.gate_up_proj [E, H, 2I] (gate/up interleaved), down_proj [E, I, H]
};
const char* moe_layout_name(MoeLayout layout);  // "dsv4", "fused", "gpt-oss", "dense-per-expert", "dense-fused", "dense-gpt-oss"
// Accepts the three MXFP4 layouts' names; mxmoe::Error listing them otherwise.
MoeLayout parse_mxfp4_layout(const std::string& name);
bool layout_is_mxfp4(MoeLayout layout);

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
  std::string scale_format;  // "E8M0" or "float32 (exact powers of two, converted to E8M0)"
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

// Quantizes an unquantized layer (bf16/f16/f32 experts) to canonical MXFP4 by the OCP rule. With
// `dense`, it also receives the unquantized expert weights in canonical order (float32), the layer
// `mxmoe verify --source` measures the quantisation error against.
LoadedMoeLayer quantize_moe_layer(const Checkpoint& ckpt, const MoeLayerRef& ref, reference::DenseExpertWeights* dense = nullptr);

// The tensors that store `layer` in an MXFP4 layout under `module_prefix` (e.g. "model.layers.3.mlp."):
// weights U8 (F4 for dsv4), scales F8_E8M0 (U8 for gpt-oss), biases and router F32.
std::vector<std::pair<std::string, HostTensor>> moe_layer_tensors(const LoadedMoeLayer& layer, MoeLayout layout,
                                                                 const std::string& module_prefix);

// Writes one safetensors file holding every MoE layer of `in` in `layout` (unquantized layers quantized
// by the OCP rule, MXFP4 layers converted losslessly) and every other tensor copied as it is.
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
QuantizeSummary quantize_checkpoint(const Checkpoint& in, const std::string& out_path, MoeLayout layout,
                                    const std::function<void(std::uint64_t, std::uint64_t)>& progress = {},
                                    bool overwrite = false);

}  // namespace mxmoe
