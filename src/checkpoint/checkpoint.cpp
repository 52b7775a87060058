// Checkpoint: one or more validated safetensors files behind one name -> tensor map.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "checkpoint/byte_source.hpp"
#include "checkpoint/header.hpp"
#include "checkpoint/index.hpp"
#include "mxmoe/safetensors.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {

namespace fs = std::filesystem;
using checkpoint::ByteSource;

struct Checkpoint::Impl {
  struct File {
    std::shared_ptr<const ByteSource> bytes;
    std::uint64_t data_start = 0;
  };
  std::string path;
  std::string index;            // the index read, if any
  std::string directory;        // the folder the checkpoint lives in
  bool directory_scan = false;  // a directory without an index: every *.safetensors in it
  std::vector<std::string> files;
  std::map<std::string, File> sources;  // by file label
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;

  void add_file(const std::string& label, std::shared_ptr<const ByteSource> bytes) {
    checkpoint::ParsedHeader h = checkpoint::parse_header(bytes->data(), bytes->size(), label);
    for (auto& t : h.tensors) {
      auto [it, fresh] = tensors.emplace(t.name, t);
      if (!fresh)
        fail(ErrorCode::Format, "checkpoint '" + path + "': tensor '" + t.name + "' is in both '" + it->second.file + "' and '" + label + "'");
    }
    for (auto& [k, v] : h.metadata) metadata[k] = v;
    files.push_back(label);
    sources[label] = File{std::move(bytes), h.data_start};
  }
};

namespace {
const char* kIndexName = "model.safetensors.index.json";
}  // namespace

Checkpoint Checkpoint::open(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(ErrorCode::NotFound, "checkpoint '" + path + "' does not exist");

  fs::path index;
  std::vector<fs::path> shards;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / kIndexName)) {
      index = fs::path(path) / kIndexName;
    } else {
      for (const auto& entry : fs::directory_iterator(path))
        if (entry.path().extension() == ".safetensors") shards.push_back(entry.path());
      std::sort(shards.begin(), shards.end());
      if (shards.empty()) fail(ErrorCode::NotFound, "directory '" + path + "' holds no .safetensors file and no " + kIndexName);
      impl->directory_scan = true;
    }
    impl->directory = path;
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    index = path;
    impl->directory = fs::path(path).parent_path().string();
  } else {
    shards.push_back(path);
    impl->directory = fs::path(path).parent_path().string();
  }
  if (impl->directory.empty()) impl->directory = ".";
  impl->index = index.string();

  if (!index.empty()) {
    const auto entries = checkpoint::read_index(index.string());
    const fs::path dir = index.parent_path();
    std::set<std::string> seen;
    for (const auto& [tensor, file] : entries)
      if (seen.insert(file).second) shards.push_back(dir / file);
    for (const auto& shard : shards) impl->add_file(shard.string(), checkpoint::map_file(shard.string()));
    for (const auto& [tensor, file] : entries) {
      auto it = impl->tensors.find(tensor);
      const std::string expected = (dir / file).string();
      if (it == impl->tensors.end() || it->second.file != expected)
        fail(ErrorCode::Format, "index '" + index.string() + "' puts tensor '" + tensor + "' in '" + file + "', which does not hold it");
    }
  } else {
    for (const auto& shard : shards) impl->add_file(shard.string(), checkpoint::map_file(shard.string()));
  }
  Checkpoint c;
  c.impl_ = std::move(impl);
  return c;
}

Checkpoint Checkpoint::from_memory(const std::string& label, std::vector<std::uint8_t> bytes) {
  auto impl = std::make_shared<Impl>();
  impl->path = label;
  impl->add_file(label, checkpoint::hold_bytes(std::move(bytes)));
  Checkpoint c;
  c.impl_ = std::move(impl);
  return c;
}

const std::string& Checkpoint::path() const { return impl_->path; }
const std::vector<std::string>& Checkpoint::files() const { return impl_->files; }
const std::string& Checkpoint::index_path() const { return impl_->index; }
const std::string& Checkpoint::directory() const { return impl_->directory; }
bool Checkpoint::is_directory_scan() const { return impl_->directory_scan; }
const std::map<std::string, std::string>& Checkpoint::metadata() const { return impl_->metadata; }

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(impl_->tensors.size());
  for (const auto& [name, info] : impl_->tensors) names.push_back(name);
  return names;
}

bool Checkpoint::contains(const std::string& name) const { return impl_->tensors.count(name) != 0; }

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = impl_->tensors.find(name);
  if (it == impl_->tensors.end()) fail(ErrorCode::NotFound, "checkpoint '" + impl_->path + "' has no tensor '" + name + "'");
  return it->second;
}

HostTensor Checkpoint::view(const std::string& name) const {
  const TensorInfo& t = info(name);
  if (!t.dtype)
    fail(ErrorCode::Unsupported, "tensor '" + name + "' in '" + t.file + "' has dtype " + t.dtype_name + ", which mxmoe does not read");
  return view_as(name, *t.dtype, t.shape);
}

HostTensor Checkpoint::view_as(const std::string& name, DType dtype, const Shape& shape) const {
  const TensorInfo& t = info(name);
  for (auto d : shape)
    if (d < 0) fail(ErrorCode::Shape, "tensor '" + name + "': cannot view it with negative shape " + shape_str(shape));
  const std::uint64_t want = dtype_bytes_for(dtype, shape_numel(shape));
  if (want != t.end - t.begin)
    fail(ErrorCode::Shape, "tensor '" + name + "' holds " + std::to_string(t.end - t.begin) + " bytes; cannot view it as " +
                               dtype_name(dtype) + " " + shape_str(shape) + " (" + std::to_string(want) + " bytes)");
  const auto& src = impl_->sources.at(t.file);
  const std::uint8_t* p = src.bytes->data() + src.data_start + t.begin;
  return HostTensor::view(dtype, shape, p, src.bytes);
}

}  // namespace mxmoe
