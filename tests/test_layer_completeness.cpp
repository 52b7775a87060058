// Layer completeness (issue 17, item 2): expert ids run 0..E-1 without a gap, and E agrees with the
// router's rows and with config.json. A model folder missing a shard is an error naming the missing
// experts and where they were looked for, from the library and from every command (exit 2, no file
// written or changed), never a smaller layer that runs.
#include <cctype>
#include <filesystem>

#include "file_snapshot.hpp"
#include "model_folder.hpp"

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

bool expert_at_least(const std::string& name, int first) {
  const auto pos = name.find("experts.");
  return pos != std::string::npos && std::isdigit(static_cast<unsigned char>(name[pos + 8])) && std::stoi(name.substr(pos + 8)) >= first;
}

// A dsv4 layer of 8 experts as a model folder (no index): experts 0-5 (and the router, if any) in the
// first shard, experts 6-7 in the second. Returns the folder.
std::string two_shard_model(const TempDir& dir, bool with_router) {
  const std::string folder = dir / "model";
  std::filesystem::create_directory(folder);
  NamedTensors first, second;
  for (auto& t : synthetic_layer(MoeLayout::DeepSeekV4, 8, with_router)) (expert_at_least(t.first, 6) ? second : first).push_back(t);
  save_safetensors(folder + "/model-00001-of-00002.safetensors", first);
  save_safetensors(folder + "/model-00002-of-00002.safetensors", second);
  return folder;
}

// Every command on `path` exits 2 with each of `messages`, and nothing under `dir` changes.
void expect_commands_refuse(const TempDir& dir, const std::string& path, const std::vector<std::string>& messages) {
  const auto before = snapshot(dir.path());
  for (const std::string& cmd : {"inspect " + path, "verify " + path + " --layer 4 --backend cpu",
                                 "quantize " + path + " " + (dir / "out.safetensors") + " --layout fused"}) {
    SCOPED_TRACE(cmd);
    const CliResult r = run_cli(cmd, dir);
    EXPECT_EQ(r.rc, 2) << r.out << r.err;
    for (const auto& m : messages) EXPECT_THAT(r.err, HasSubstr(m));
  }
  EXPECT_EQ(snapshot_diff(before, snapshot(dir.path())), "");
}

}  // namespace

TEST(LayerCompleteness, AModelFolderMissingAShardNamesTheMissingExpertsFromTheRouter) {
  TempDir dir;
  const std::string folder = two_shard_model(dir, true);
  EXPECT_EQ(find_moe_layers(Checkpoint::open(folder)).front().num_experts, 8);  // complete: fine
  std::filesystem::remove(folder + "/model-00002-of-00002.safetensors");
  const std::string msg = error_of([&] { find_moe_layers(Checkpoint::open(folder)); });
  EXPECT_THAT(msg, AllOf(HasSubstr("layer 4 ('model.layers.4.mlp.experts.', dsv4)"),
                         HasSubstr("router 'model.layers.4.mlp.gate.weight' (8 rows) gives 8 experts, but expert(s) 6 and 7 are missing"),
                         HasSubstr("looked for 'model.layers.4.mlp.experts.{e}.w1.weight' in 1 file(s): '" + folder +
                                   "/model-00001-of-00002.safetensors'")));
  expect_commands_refuse(dir, folder, {"expert(s) 6 and 7 are missing"});
}

TEST(LayerCompleteness, ConfigJsonGivesTheCountWhenThereIsNoRouter) {
  TempDir dir;
  const std::string folder = two_shard_model(dir, false);
  for (const char* key : {"n_routed_experts", "num_local_experts", "num_experts"}) {
    SCOPED_TRACE(key);
    write_text(folder + "/config.json", std::string("{\"model_type\": \"x\", \"") + key + "\": 8}");
    EXPECT_EQ(find_moe_layers(Checkpoint::open(folder)).front().num_experts, 8);
  }
  write_text(folder + "/config.json", R"({"text_config": {"num_local_experts": 8}})");
  std::filesystem::remove(folder + "/model-00002-of-00002.safetensors");
  expect_commands_refuse(dir, folder, {"config.json 'num_local_experts'", "gives 8 experts, but expert(s) 6 and 7 are missing"});
  // Without config.json or router nothing says how many there were: 6 experts, 0..5, is a valid layer.
  std::filesystem::remove(folder + "/config.json");
  EXPECT_EQ(find_moe_layers(Checkpoint::open(folder)).front().num_experts, 6);
}

TEST(LayerCompleteness, AGapInTheExpertIdsIsNamed) {
  TempDir dir;
  NamedTensors tensors;
  for (auto& t : synthetic_layer(MoeLayout::DeepSeekV4, 8, false))
    if (t.first.find("experts.3.") == std::string::npos && t.first.find("experts.5.") == std::string::npos) tensors.push_back(t);
  save_safetensors(dir / "gap.safetensors", tensors);
  expect_commands_refuse(dir, dir / "gap.safetensors", {"expert(s) 3 and 5 of 0..7 are missing", "experts.{e}.w1.weight"});
}

TEST(LayerCompleteness, StackedLayersMustAgreeWithRouterAndConfig) {
  TempDir dir;
  std::filesystem::create_directory(dir / "m");
  NamedTensors tensors = synthetic_layer(MoeLayout::Fused, 4, false);
  tensors.emplace_back("model.layers.4.mlp.gate.weight", HostTensor::zeros(DType::F32, {5, 64}));  // 5 router rows for 4 experts
  save_safetensors(dir / "m/model.safetensors", tensors);
  expect_commands_refuse(dir, dir / "m/model.safetensors",
                         {"its tensors hold 4 experts, but router 'model.layers.4.mlp.gate.weight' (5 rows) gives 5"});
  save_safetensors(dir / "m/model.safetensors", synthetic_layer(MoeLayout::Fused, 4, false));
  write_text(dir / "m/config.json", R"({"num_local_experts": 16})");
  expect_commands_refuse(dir, dir / "m/model.safetensors", {"its tensors hold 4 experts, but config.json 'num_local_experts'", "gives 16"});
}
