#include "checkpoint/output_check.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <utility>
#include <vector>

#include "checkpoint/regular_file.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {
namespace {

namespace fs = std::filesystem;
using FileId = std::pair<dev_t, ino_t>;

bool file_id(const std::string& path, FileId* id, struct stat* st_out = nullptr) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  *id = {st.st_dev, st.st_ino};
  if (st_out) *st_out = st;
  return true;
}

std::string folder_of(const std::string& path) {
  const fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

void check_output_spares_input(const Checkpoint& in, const std::string& out_path, bool overwrite) {
  if (out_path.empty()) fail(ErrorCode::InvalidArgument, "the output path is empty");
  // Every file the input is made of, plus what describes it.
  std::vector<std::string> inputs = in.files();
  if (!in.index_path().empty()) inputs.push_back(in.index_path());
  inputs.push_back((fs::path(in.directory()) / "config.json").string());

  FileId out_id;
  struct stat out_st {};
  if (file_id(out_path, &out_id, &out_st)) {
    for (const auto& input : inputs) {
      FileId id;
      if (file_id(input, &id) && id == out_id)
        fail(ErrorCode::InvalidArgument, "output '" + out_path + "' is the input file '" + input + "' of checkpoint '" + in.path() +
                                             "'; quantize writes a new file and never replaces its input");
    }
    if (!S_ISREG(out_st.st_mode))
      fail(ErrorCode::InvalidArgument, "output '" + out_path + "' is " + file_kind(out_st.st_mode) + "; give a file name");
    if (!overwrite) fail(ErrorCode::InvalidArgument, "output '" + out_path + "' exists; pass --force to replace it");
  }

  // The output's folder against each folder the input is read from.
  FileId out_dir;
  if (!file_id(folder_of(out_path), &out_dir)) return;  // a missing folder: the writer names it
  const std::string out_name = fs::path(out_path).filename().string();
  for (const auto& file : in.files()) {
    const std::string dir = folder_of(file);
    FileId id;
    if (!file_id(dir, &id) || id != out_dir) continue;
    if (out_name == "model.safetensors.index.json")
      fail(ErrorCode::InvalidArgument, "output '" + out_path + "' would become the index of the model in '" + dir + "'; choose another name");
    const bool indexed = fs::exists(fs::path(dir) / "model.safetensors.index.json");
    const bool model_dir = in.is_directory_scan() || fs::exists(fs::path(dir) / "config.json");
    if (!indexed && model_dir && ends_with(out_name, ".safetensors"))
      fail(ErrorCode::InvalidArgument, "output '" + out_path + "' would be written into '" + dir +
                                           "', a model folder without a model.safetensors.index.json: every *.safetensors there is "
                                           "read as part of the model, so the folder would hold two copies of its tensors; write the "
                                           "output to another folder");
    return;
  }
}

}  // namespace mxmoe::checkpoint
