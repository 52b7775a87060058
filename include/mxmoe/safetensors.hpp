// Safetensors files: read through a memory map (zero-copy views), sharded models through
// model.safetensors.index.json, and written sequentially. Knows nothing of MoE layers
// (mxmoe/checkpoint.hpp builds on it).
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mxmoe/tensor.hpp"

namespace mxmoe {

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

}  // namespace mxmoe
