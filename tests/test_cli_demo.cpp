// `mxmoe demo` run as a process: a tiny problem passes its check and names its backend; bad
// options exit 2 with a message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "mxmoe/moe_layer.hpp"
#include "test_util.hpp"

using ::testing::HasSubstr;

namespace {

using mxmoe::test::CliRun;
using mxmoe::test::run_cli;

const char* kTiny = "demo --experts 8 --hidden 256 --inter 128 --tokens 4 --threads 2";

}  // namespace

TEST(CliDemo, TinyProblemPassesItsCheck) {
  const CliRun r = run_cli(kTiny);
  EXPECT_EQ(r.rc, 0) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("H=256 I=128 E=8 (the preset has 256) top-6"));
  EXPECT_THAT(r.output(), HasSubstr("check: 3 tokens"));
  EXPECT_THAT(r.output(), HasSubstr("PASS"));
  if (mxmoe::check_hopper_device().ok) {
    EXPECT_THAT(r.output(), HasSubstr("backend gpu"));
  } else {
    EXPECT_THAT(r.output(), HasSubstr("no Hopper GPU: "));
    EXPECT_THAT(r.output(), HasSubstr("running the CPU reference backend"));
    EXPECT_THAT(r.output(), HasSubstr("backend cpu-reference"));
    EXPECT_THAT(r.output(), HasSubstr("tokens/s"));
    EXPECT_THAT(r.output(), HasSubstr("against a float64 recomputation"));
  }
}

TEST(CliDemo, CpuBackendOnAnotherPreset) {
  const CliRun r = run_cli("demo --backend cpu --preset gpt-oss-20b --experts 4 --hidden 64 --inter 96 --tokens 5 --check-tokens 5");
  EXPECT_EQ(r.rc, 0) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("backend: CPU reference (asked for with --backend cpu)"));
  EXPECT_THAT(r.output(), HasSubstr("'gpt-oss-20b'-shaped layer, H=64 I=96 E=4 (the preset has 32) top-4"));
  EXPECT_THAT(r.output(), HasSubstr("expert biases yes"));
  EXPECT_THAT(r.output(), HasSubstr("check: 5 tokens [0, 1, 2, 3, 4]"));
  EXPECT_THAT(r.output(), HasSubstr("PASS"));
}

TEST(CliDemo, GpuBackendWithoutHopperExitsTwo) {
  if (mxmoe::check_hopper_device().ok) GTEST_SKIP() << "a Hopper GPU is present";
  const CliRun r = run_cli(std::string(kTiny) + " --backend gpu");
  EXPECT_EQ(r.rc, 2) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("--backend gpu needs a Hopper GPU: "));
}

TEST(CliDemo, BadOptionsExitTwo) {
  CliRun r = run_cli("demo --preset nope");
  EXPECT_EQ(r.rc, 2) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("unknown model preset 'nope'"));
  for (const char* name : {"dsv4-flash", "dsv4-pro", "dsv3", "gpt-oss-120b", "gpt-oss-20b", "qwen3-30b"})
    EXPECT_THAT(r.output(), HasSubstr(name));
  r = run_cli("demo --backend tpu");
  EXPECT_EQ(r.rc, 2) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("--backend must be auto, cpu or gpu, got 'tpu'"));
  r = run_cli("demo --experts 8 --hidden 100 --inter 128 --tokens 4");
  EXPECT_EQ(r.rc, 2) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("H=100"));
  r = run_cli(std::string(kTiny) + " --topk 9");
  EXPECT_EQ(r.rc, 2) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("top_k must be in 1..8, got 9"));
  r = run_cli("demo --experts 8 --hidden 256 --inter 128 --tokens 0");
  EXPECT_EQ(r.rc, 2) << r.output();
  EXPECT_THAT(r.output(), HasSubstr("--tokens must be >= 1, got 0"));
}

TEST(CliDemo, HelpExplainsBackendsAndOptions) {
  const CliRun r = run_cli("demo --help");
  EXPECT_EQ(r.rc, 0) << r.output();
  for (const char* s : {"--preset", "--backend", "--hidden", "--inter", "--experts", "--topk", "--tokens", "--seed", "--threads",
                        "--check-tokens", "DeepSeek-V4-Flash", "Backends:", "Exit status"})
    EXPECT_THAT(r.output(), HasSubstr(s));
}
