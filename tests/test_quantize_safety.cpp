// `mxmoe quantize` never harms its input (issue 17, item 1): an OUT that is an input file (by inode:
// the same path, a symlink, a hard link, a shard, the index), a folder, or a .safetensors that would
// join a model folder read without an index is refused with exit 2; an existing OUT needs --force;
// the output is written under a unique temporary and renamed, and an error leaves no file behind.
// Every case checks the exit code, the message, and that no file under the test folder changed.
#include <unistd.h>

#include <filesystem>
#include <limits>

#include "file_snapshot.hpp"
#include "model_folder.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

// Runs `quantize ARGS --layout fused` and expects exit 2 with `message`, nothing under `dir` changed.
void expect_refused(const TempDir& dir, const std::string& args, const std::string& message) {
  SCOPED_TRACE(args);
  const auto before = snapshot(dir.path());
  const CliResult r = run_cli("quantize " + args + " --layout gpt-oss", dir);
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr(message));
  EXPECT_EQ(snapshot_diff(before, snapshot(dir.path())), "");
}

}  // namespace

TEST(QuantizeSafety, OutputThatIsTheInputIsRefusedEvenWithForce) {
  TempDir dir;
  const std::string in = dir / "model.safetensors";
  save_safetensors(in, synthetic_layer(MoeLayout::Fused));
  std::filesystem::create_symlink(in, dir / "link.safetensors");
  ASSERT_EQ(::link(in.c_str(), (dir / "hard.safetensors").c_str()), 0);
  for (const std::string& out : {in, dir / "link.safetensors", dir / "hard.safetensors", dir.path() + "/./model.safetensors"})
    for (const char* force : {"", " --force"})
      expect_refused(dir, in + " " + out + force, "is the input file '" + in + "'");
}

TEST(QuantizeSafety, OutputOntoAShardOrTheIndexOfTheInputIsRefused) {
  TempDir dir;
  const auto shards = write_shards(dir.path(), synthetic_layer(MoeLayout::Fused), 2, true);
  for (const std::string& in : {dir.path(), dir / "model.safetensors.index.json"}) {
    expect_refused(dir, in + " " + (dir / shards[1]) + " --force", "is the input file");
    expect_refused(dir, in + " " + (dir / "model.safetensors.index.json") + " --force", "is the input file");
  }
}

TEST(QuantizeSafety, OutputThatWouldJoinAModelFolderWithoutIndexIsRefused) {
  TempDir dir;
  std::filesystem::create_directory(dir / "model");
  write_shards(dir / "model", synthetic_layer(MoeLayout::Fused), 2, false);
  expect_refused(dir, (dir / "model") + " " + (dir / "model/q.safetensors"), "a model folder without a model.safetensors.index.json");
  // A single-file model next to its config.json is such a folder too.
  std::filesystem::create_directory(dir / "hf");
  save_safetensors(dir / "hf/model.safetensors", synthetic_layer(MoeLayout::Fused));
  write_text(dir / "hf/config.json", "{\"num_local_experts\": 4}");
  expect_refused(dir, (dir / "hf/model.safetensors") + " " + (dir / "hf/q.safetensors"), "a model folder without");
  expect_refused(dir, (dir / "hf/model.safetensors") + " " + (dir / "hf/model.safetensors.index.json"), "would become the index");
  expect_refused(dir, (dir / "hf/model.safetensors") + " " + (dir / "hf/config.json") + " --force", "is the input file");
}

TEST(QuantizeSafety, ExistingOutputNeedsForceAndAFolderIsNeverAnOutput) {
  TempDir dir;
  const std::string in = dir / "in.safetensors", out = dir / "out.safetensors";
  save_safetensors(in, synthetic_layer(MoeLayout::Fused));
  write_text(out, "the user's own file");
  expect_refused(dir, in + " " + out, "output '" + out + "' exists; pass --force to replace it");
  std::filesystem::create_directory(dir / "folder");
  expect_refused(dir, in + " " + (dir / "folder") + " --force", "is a directory");

  const CliResult r = run_cli("quantize " + in + " " + out + " --layout gpt-oss --force", dir);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(load_moe_layer(Checkpoint::open(out), 4).ref.layout, MoeLayout::GptOss);
}

TEST(QuantizeSafety, TemporaryIsUniqueAndAnErrorLeavesNoFile) {
  TempDir dir;
  const std::string in = dir / "in.safetensors", out = dir / "out.safetensors";
  save_safetensors(in, synthetic_layer(MoeLayout::Fused));
  // A user's file with the name older versions used for their temporary is never touched.
  write_text(out + ".partial", "keep me");
  auto before = snapshot(dir.path());
  CliResult r = run_cli("quantize " + in + " " + out + " --layout dsv4", dir);
  EXPECT_EQ(r.rc, 0) << r.err;
  auto after = snapshot(dir.path());
  EXPECT_EQ(snapshot_diff(before, after), "added out.safetensors\n");  // nothing else, no temporary left
  EXPECT_EQ(read_text(out + ".partial"), "keep me");

  // A non-finite weight fails while the layer streams, after the temporary was made: it is removed,
  // and only it.
  HostTensor w13 = HostTensor::zeros(DType::F32, {2, 64, 64}), w2 = HostTensor::zeros(DType::F32, {2, 64, 32});
  w2.mutable_as<float>()[100] = std::numeric_limits<float>::quiet_NaN();
  save_safetensors(dir / "dense.safetensors", {{"model.layers.4.mlp.experts.w13_weight", w13}, {"model.layers.4.mlp.experts.w2_weight", w2}});
  before = snapshot(dir.path());
  r = run_cli("quantize " + (dir / "dense.safetensors") + " " + (dir / "q.safetensors") + " --layout dsv4", dir);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_THAT(r.err, HasSubstr("not finite"));
  EXPECT_EQ(snapshot_diff(before, snapshot(dir.path())), "");
}
