// mxmoe verify on checkpoints of each layout and scale format: passes where the layer is right,
// fails when the tolerance cannot be met, and names bad options and layers. Needs the CPU oracle
// (reference::moe_forward) linked into the CLI.
#include <cmath>

#include "test_checkpoint_util.hpp"

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

std::string write_layer(const TempDir& dir, MoeLayout layout, bool float_scales) {
  SyntheticSpec spec;
  spec.num_experts = 6;
  spec.hidden = 96;
  spec.inter = 64;
  spec.with_biases = layout != MoeLayout::DeepSeekV4;
  spec.seed = 21;
  LoadedMoeLayer l;
  l.weights = make_synthetic_weights(spec);
  if (layout == MoeLayout::GptOss) l.weights.correction_bias.reset();
  auto tensors = moe_layer_tensors(l, layout, "model.layers.4.mlp.");
  if (float_scales)
    for (auto& [name, t] : tensors)
      if (name.find("scale") != std::string::npos) {
        HostTensor f = HostTensor::zeros(DType::F32, t.shape());
        for (std::int64_t i = 0; i < t.numel(); ++i) f.mutable_as<float>()[i] = std::ldexp(1.0f, t.as<std::uint8_t>()[i] - 127);
        t = f;
      }
  const std::string path = dir / (std::string(moe_layout_name(layout)) + (float_scales ? "-f32" : "-e8m0") + ".safetensors");
  save_safetensors(path, tensors);
  return path;
}

}  // namespace

TEST(VerifyCli, EveryLayoutAndScaleFormatPasses) {
  TempDir dir;
  for (MoeLayout layout : {MoeLayout::DeepSeekV4, MoeLayout::Fused, MoeLayout::GptOss})
    for (bool float_scales : {false, true}) {
      SCOPED_TRACE(std::string(moe_layout_name(layout)) + (float_scales ? " f32 scales" : " e8m0 scales"));
      const CliResult r = run_cli("verify " + write_layer(dir, layout, float_scales) + " --layer 4 --tokens 16", dir);
      EXPECT_EQ(r.rc, 0) << r.out << r.err;
      EXPECT_THAT(r.out, AllOf(HasSubstr("E=6 H=96 I=64"), HasSubstr("backend: "), HasSubstr("rel_l2_err"), HasSubstr("PASS")));
    }
}

TEST(VerifyCli, FailsWhenTheToleranceCannotBeMet) {
  TempDir dir;
  // On the CPU backend the fp32 oracle's bf16 output is compared with float64: ~1e-3 relative, so
  // 1e-9 cannot pass. (The GPU layer can match the oracle bit for bit on a tiny layer, as it did on
  // the H100, so this test pins the CPU backend.)
  const CliResult r = run_cli("verify " + write_layer(dir, MoeLayout::Fused, false) +
                                  " --layer 4 --tokens 4 --tolerance 1e-9 --backend cpu",
                              dir);
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_THAT(r.out, HasSubstr("FAIL"));
}

TEST(VerifyCli, BadOptionsAndLayersAreNamed) {
  TempDir dir;
  const std::string path = write_layer(dir, MoeLayout::Fused, false);
  test::expect_cli_refuses("verify " + path + " --layer 9", "has no MoE layer 9 (layers: 4)");
  test::expect_cli_refuses("verify " + path + " --layer 4 --tokens 0", "--tokens must be at least 1, got 0");
  test::expect_cli_refuses("verify " + path + " --layer 4 --activation relu", "unknown activation 'relu'");
  test::expect_cli_refuses("verify " + path + " --layer 4 --top-k 7", "top_k");
}

// --act fp8 (W4A8, issue 14): the CPU oracle's FP8 per-token mode, reported against the W4A16 oracle
// and checked against float64 with its own default tolerance (6e-2): E4M3's 2^-3 steps give a few
// percent (4.3-4.7e-2 measured on synthetic layers without biases, H = 128..2048), far above bf16's
// ~2e-3 and far below an unrelated output's ~1. (Biases, which FP8 leaves exact, dilute it: a DeepSeek
// V4 layer, which has none, keeps the test honest.)
TEST(VerifyCli, Fp8ReportsTheW4a8ErrorAgainstW4a16AndFloat64) {
  TempDir dir;
  const std::string path = write_layer(dir, MoeLayout::DeepSeekV4, false);
  CliResult r = run_cli("verify " + path + " --layer 4 --tokens 16 --act fp8", dir);
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("W4A8 vs the W4A16 oracle on all 16 tokens: rel_l2_err"), HasSubstr("tolerance(rel_l2) 0.06"),
                           HasSubstr("PASS")));
  // The error is an FP8 error, not a bf16 one: 1e-2 (bf16's default) does not hold.
  r = run_cli("verify " + path + " --layer 4 --tokens 16 --act fp8 --tolerance 1e-2", dir);
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("FAIL"));
  // --backend gpu runs the W4A8 kernels where there is a Hopper GPU, and says why not elsewhere.
  if (check_hopper_device().ok) {
    r = run_cli("verify " + path + " --layer 4 --tokens 16 --act fp8 --backend gpu", dir);
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    EXPECT_THAT(r.out, AllOf(HasSubstr("W4A8 GPU vs the CPU's FP8 oracle"), HasSubstr("PASS")));
  } else {
    test::expect_cli_refuses("verify " + path + " --layer 4 --act fp8 --backend gpu", "no usable GPU backend");
  }
  test::expect_cli_refuses("verify " + path + " --layer 4 --act fp4", "fp4");
  test::expect_cli_refuses("verify " + path + " --layer 4 --act fp8 --source " + path, "--act fp8 with --source: pick one report");
  // W4A8 folds MXFP4 weights only: an NVFP4 layer is refused, naming it.
  SyntheticSpec spec;
  spec.num_experts = 3;
  spec.hidden = 80;
  spec.inter = 48;
  spec.seed = 23;
  spec.format = WeightFormat::nvfp4_with(DType::BF16);
  LoadedMoeLayer nv;
  nv.weights = make_synthetic_weights(spec);
  const std::string nv_path = dir / "nvfp4.safetensors";
  save_safetensors(nv_path, moe_layer_tensors(nv, MoeLayout::ModelOpt, "model.layers.2.mlp."));
  test::expect_cli_refuses("verify " + nv_path + " --layer 2 --act fp8", "--act fp8: W4A8 takes MXFP4 weights; layer 2 is NVFP4");
}
