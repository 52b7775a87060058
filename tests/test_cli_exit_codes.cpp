// One exit-code policy for every command (issue 17, items 3 and 4): 0 success, 1 a check that failed
// (verify), 2 any usage or input error, the option or file named on stderr. Option parsing errors
// (CLI11's own), sizes the machine cannot hold, out-of-range --top-k/--tolerance/--layer, layers that
// do not exist, and files that are not regular files (which must not block) all exit 2, and no input
// file changes. A mapped file that shrinks under a command ends in a named error, not SIGBUS.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "file_snapshot.hpp"
#include "model_folder.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

// `mxmoe ARGS` (killed after 20 s: a blocking open would show as 124) must exit `rc` with `message`
// on stderr and leave every file under `dir` as it was.
void expect_exit(const TempDir& dir, const std::string& args, int rc, const std::string& message) {
  SCOPED_TRACE(args);
  const auto before = snapshot(dir.path());
  const CliResult r = run_command("timeout 20 '" + std::string(MXMOE_CLI) + "' " + args, dir);
  EXPECT_EQ(r.rc, rc) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr(message));
  EXPECT_EQ(snapshot_diff(before, snapshot(dir.path())), "");
}

std::string fused_model(const TempDir& dir) {
  const std::string path = dir / "fused.safetensors";
  save_safetensors(path, synthetic_layer(MoeLayout::Fused));
  return path;
}

}  // namespace

TEST(ExitCodes, OptionParsingErrorsExitTwoNamingTheOption) {
  TempDir dir;
  const std::string m = fused_model(dir);
  expect_exit(dir, "verify " + m + " --layer 4 --tokens abc", 2, "--tokens");
  expect_exit(dir, "verify " + m + " --layer x", 2, "--layer");
  expect_exit(dir, "verify " + m + " --layer 4 --tolerance abc", 2, "--tolerance");
  expect_exit(dir, "verify " + m + " --layer 4 --bogus", 2, "--bogus");
  expect_exit(dir, "verify " + m, 2, "--layer is required");
  expect_exit(dir, "inspect", 2, "path is required");
  expect_exit(dir, "quantize " + m + " " + (dir / "q.safetensors"), 2, "--layout is required");
  expect_exit(dir, "nonsense", 2, "nonsense");
  const CliResult help = run_cli("verify --help", dir);
  EXPECT_EQ(help.rc, 0);
  EXPECT_EQ(run_cli("--help", dir).rc, 0);
  EXPECT_THAT(run_cli("--help", dir).out, HasSubstr("Exit status: 0 success, 1 a check failed (verify), 2 a usage or input error"));
}

TEST(ExitCodes, OutOfRangeValuesAreRefusedNotReplaced) {
  TempDir dir;
  const std::string m = fused_model(dir);
  expect_exit(dir, "verify " + m + " --layer 4 --top-k 0", 2, "--top-k must be at least 1, got 0");
  expect_exit(dir, "verify " + m + " --layer 4 --top-k -1", 2, "--top-k must be at least 1, got -1");
  expect_exit(dir, "verify " + m + " --layer 4 --tolerance -1", 2, "--tolerance must be a finite number >= 0, got -1");
  expect_exit(dir, "verify " + m + " --layer 4 --tolerance nan", 2, "--tolerance must be a finite number >= 0, got nan");
  expect_exit(dir, "verify " + m + " --layer 4 --tolerance inf", 2, "--tolerance must be a finite number >= 0, got inf");
  expect_exit(dir, "verify " + m + " --layer 4 --tokens 0", 2, "--tokens must be at least 1, got 0");
}

TEST(ExitCodes, SizesTheMachineCannotHoldAreNamedWithTheSize) {
  TempDir dir;
  const std::string m = fused_model(dir);
  expect_exit(dir, "verify " + m + " --layer 4 --tokens 1000000000", 2, "--tokens 1000000000 (H=64, E=4, top-k 4) needs about ");
  expect_exit(dir, "verify " + m + " --layer 4 --tokens 1000000000", 2, "GiB of host memory, more than the ");
  expect_exit(dir, "demo --backend cpu --experts 8 --hidden 256 --inter 128 --tokens 1000000000", 2,
              "demo: --tokens 1000000000 on H=256 I=128 E=8 needs about ");
}

TEST(ExitCodes, LayerIsValidatedEverywhere) {
  TempDir dir;
  const std::string m = fused_model(dir);
  for (const char* cmd : {"inspect ", "verify "}) {
    expect_exit(dir, cmd + m + " --layer -3", 2, "--layer must be a layer number >= 0, got -3");
    expect_exit(dir, cmd + m + " --layer 7", 2, "has no MoE layer 7 (layers: 4)");
  }
  // A checkpoint without MoE layers: --layer is an error there too, not "0 MoE layer(s)" and exit 0.
  save_safetensors(dir / "plain.safetensors", {{"model.norm.weight", HostTensor::zeros(DType::F32, {4})}});
  expect_exit(dir, "inspect " + (dir / "plain.safetensors") + " --layer 0", 2, "holds no MoE layer");
  EXPECT_EQ(run_cli("inspect " + (dir / "plain.safetensors"), dir).rc, 0);  // listing nothing is fine
  EXPECT_EQ(run_cli("inspect " + m + " --layer 4", dir).rc, 0);
}

TEST(ExitCodes, NonRegularFilesAreRefusedWithoutBlocking) {
  TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "pipe.safetensors").c_str(), 0600), 0);
  expect_exit(dir, "inspect " + (dir / "pipe.safetensors"), 2, "'" + (dir / "pipe.safetensors") + "' is a named pipe (FIFO)");
  expect_exit(dir, "verify " + (dir / "pipe.safetensors") + " --layer 0", 2, "is a named pipe (FIFO)");
  // A folder read as a model: the pipe among its *.safetensors is refused too.
  expect_exit(dir, "inspect " + dir.path(), 2, "is a named pipe (FIFO)");
  // An index that is a pipe, and an index naming a pipe or a folder as its shard.
  std::filesystem::create_directory(dir / "m");
  ASSERT_EQ(::mkfifo((dir / "m/model.safetensors.index.json").c_str(), 0600), 0);
  expect_exit(dir, "inspect " + (dir / "m"), 2, "index '" + (dir / "m/model.safetensors.index.json") + "' is a named pipe (FIFO)");
  std::filesystem::create_directory(dir / "n");
  std::filesystem::create_directory(dir / "n/shard.safetensors");
  write_text(dir / "n/model.safetensors.index.json", R"({"weight_map": {"x": "shard.safetensors"}})");
  expect_exit(dir, "inspect " + (dir / "n"), 2, "'" + (dir / "n/shard.safetensors") + "' is a directory, not a regular file");
  expect_exit(dir, "inspect /dev/null", 2, "'/dev/null' is a character device");
}

TEST(ExitCodesDeathTest, AFileThatShrinksWhileMappedIsANamedErrorNotSigbus) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const std::string path = dir / "big.safetensors";
  save_safetensors(path, {{"t", HostTensor::zeros(DType::U8, {1 << 20})}});
  EXPECT_EXIT(
      {
        install_mapped_file_guard();
        const Checkpoint c = Checkpoint::open(path);
        const HostTensor t = c.view("t");
        if (::truncate(path.c_str(), 4096) != 0) std::_Exit(9);
        volatile std::uint8_t sum = 0;
        for (std::int64_t i = 0; i < t.numel(); i += 4096) sum = sum + t.as<std::uint8_t>()[i];
        std::_Exit(0);  // not reached: the read past the new end faults
      },
      // (the threadsafe style re-runs the test in the child, with another TempDir: the name's tail only)
      ::testing::ExitedWithCode(2), "big.safetensors' shrank while mxmoe was reading it: byte [0-9]+ of the [0-9]+ it had when opened is gone");
}
