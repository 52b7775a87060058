// mxmoe verify --source (the quantisation error of an MXFP4 layer against the bf16 layer it came from)
// and --backend gpu (an error saying why where no Hopper GPU backend is usable); issue 17, item 5.
#include <regex>

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"
#include "test_checkpoint_util.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

// A bf16 dense-fused layer 3 (E=4, H=64, I=96) and its MXFP4 quantisation (fused), both in `dir`.
void write_source_and_quantized(const TempDir& dir) {
  SplitMix64 rng(9);
  auto bf16 = [&](const Shape& shape, double std) {
    HostTensor t = HostTensor::zeros(DType::BF16, shape);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.mutable_as<std::uint16_t>()[i] = formats::float_to_bf16(static_cast<float>(rng.normal() * std));
    return t;
  };
  save_safetensors(dir / "src.safetensors", {{"model.layers.3.mlp.experts.w13_weight", bf16({4, 192, 64}, 0.1)},
                                             {"model.layers.3.mlp.experts.w2_weight", bf16({4, 64, 96}, 0.1)},
                                             {"model.layers.3.mlp.gate.weight", bf16({4, 64}, 1.0)}});
  const CliResult q = run_cli("quantize " + (dir / "src.safetensors") + " " + (dir / "q.safetensors") + " --layout fused", dir);
  ASSERT_EQ(q.rc, 0) << q.err;
}

double number_after(const std::string& text, const std::string& label) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(label + " ([-+0-9.eEinfa]+)"))) return -1;
  return std::stod(m[1]);
}

}  // namespace

TEST(VerifySource, ReportsTheQuantisationErrorAgainstTheBf16Layer) {
  TempDir dir;
  write_source_and_quantized(dir);
  const std::string src = read_text(dir / "src.safetensors"), q = read_text(dir / "q.safetensors");
  const CliResult r = run_cli("verify " + (dir / "q.safetensors") + " --layer 3 --backend cpu --tokens 16 --source " + (dir / "src.safetensors"), dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("source: layer 3 of '" + (dir / "src.safetensors") + "' (dense-fused) in float64 on the same 16 tokens"));
  // MXFP4 of normal weights: a few percent relative error (E2M1 has 3 bits; the OCP scale wastes up to
  // one), never zero, never as large as the output itself.
  const double q_err = number_after(r.out.substr(r.out.find("quantisation error")), "rel_l2_err");
  EXPECT_GT(q_err, 0.02) << r.out;
  EXPECT_LT(q_err, 0.5) << r.out;
  EXPECT_THAT(r.out, HasSubstr("PASS"));
  EXPECT_EQ(read_text(dir / "src.safetensors"), src);
  EXPECT_EQ(read_text(dir / "q.safetensors"), q);

  // The same number from the library: the oracle of the MXFP4 layer against the float64 dense forward.
  const Checkpoint in = Checkpoint::open(dir / "src.safetensors");
  reference::DenseExpertWeights dense;
  const LoadedMoeLayer s = quantize_moe_layer(in, find_moe_layer(in, 3), &dense);
  EXPECT_EQ(dense.w13.shape(), (Shape{4, 192, 64}));
  EXPECT_EQ(dense.w2.shape(), (Shape{4, 64, 96}));
  EXPECT_EQ(dense.w13.as<float>()[5], formats::bf16_to_float(in.view("model.layers.3.mlp.experts.w13_weight").as<std::uint16_t>()[5]));
}

TEST(VerifySource, ASourceThatIsNotAnUnquantizedLayerIsRefused) {
  TempDir dir;
  write_source_and_quantized(dir);
  const std::string q = read_text(dir / "q.safetensors");
  const CliResult r = run_cli("verify " + (dir / "q.safetensors") + " --layer 3 --backend cpu --source " + (dir / "q.safetensors"), dir);
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("--source '" + (dir / "q.safetensors") + "': layer 3 is fused, already MXFP4"));
  EXPECT_EQ(read_text(dir / "q.safetensors"), q);
}

TEST(VerifyBackend, GpuWithoutAHopperBackendSaysWhy) {
  TempDir dir;
  write_source_and_quantized(dir);
  const DeviceCheck device = check_hopper_device();
  const CliResult r = run_cli("verify " + (dir / "q.safetensors") + " --layer 3 --backend gpu --tokens 8", dir);
  if (device.ok) {  // a Hopper machine with the CUDA backend: the GPU layer runs
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("backend: GPU MoeLayer"));
    return;
  }
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("--backend gpu: no usable GPU backend: " + device.message));
  const CliResult bad = run_cli("verify " + (dir / "q.safetensors") + " --layer 3 --backend tpu", dir);
  EXPECT_EQ(bad.rc, 2);
  EXPECT_THAT(bad.err, HasSubstr("--backend must be auto, gpu or cpu, got 'tpu'"));
}
