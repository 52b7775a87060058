// NVFP4 checkpoints as NVIDIA ModelOpt writes them: per-expert gate_proj/up_proj/down_proj with
// F8_E4M3 weight_scale [N, K/16], F32 scalar weight_scale_2 and an ignored input_scale; the fused
// runtime names (w13_weight_scale_2 [E, 2] or [E]). Loaded to canonical NVFP4 weights byte for byte,
// named errors for what is missing or malformed, `mxmoe quantize --format nvfp4` from bf16 experts
// read back (the global scales and codes by ModelOpt's rule), inspect and verify on the CPU backend.
#include <algorithm>
#include <random>
#include <tuple>

#include "formats/bf16.hpp"
#include "formats/nvfp4.hpp"
#include "test_checkpoint_util.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

using Tensors = std::vector<std::pair<std::string, HostTensor>>;

HostTensor& named(Tensors& t, const std::string& name) {
  for (auto& [n, v] : t)
    if (n == name) return v;
  throw std::runtime_error("test: no tensor " + name);
}

LoadedMoeLayer nv_layer(std::uint64_t seed, bool biases) {
  SyntheticSpec spec;
  spec.num_experts = 3;
  spec.hidden = 80;
  spec.inter = 48;
  spec.with_biases = biases;
  spec.seed = seed;
  spec.format = WeightFormat::nvfp4_with(DType::BF16);
  LoadedMoeLayer l;
  l.weights = make_synthetic_weights(spec);
  return l;
}

void expect_same(const CanonicalMoeWeights& a, const CanonicalMoeWeights& b) {
  EXPECT_TRUE(b.format.nvfp4());
  EXPECT_TRUE(same_bytes(a.w13, b.w13));
  EXPECT_TRUE(same_bytes(a.w13_scale, b.w13_scale));
  EXPECT_TRUE(same_bytes(a.w2, b.w2));
  EXPECT_TRUE(same_bytes(a.w2_scale, b.w2_scale));
  ASSERT_TRUE(b.w13_global_scale && b.w2_global_scale);
  EXPECT_TRUE(same_bytes(*a.w13_global_scale, *b.w13_global_scale));
  EXPECT_TRUE(same_bytes(*a.w2_global_scale, *b.w2_global_scale));
}

}  // namespace

TEST(Nvfp4Checkpoint, ModelOptPerExpertNamesLoadExactly) {
  TempDir dir;
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const LoadedMoeLayer l = nv_layer(seed, false);
  Tensors t = moe_layer_tensors(l, MoeLayout::ModelOpt, "model.layers.2.mlp.");
  const std::string ex = "model.layers.2.mlp.experts.";
  EXPECT_EQ(named(t, ex + "0.gate_proj.weight_scale").dtype(), DType::F8_E4M3);
  EXPECT_EQ(named(t, ex + "0.gate_proj.weight_scale").shape(), (Shape{48, 5}));
  EXPECT_EQ(named(t, ex + "1.down_proj.weight_scale_2").shape(), Shape{});
  EXPECT_EQ(named(t, ex + "1.down_proj.weight_scale_2").as<float>()[0], l.weights.w2_global_scale->as<float>()[1]);
  // ModelOpt also stores input_scale (ignored) and may shape weight_scale_2 as [1].
  HostTensor one = HostTensor::zeros(DType::F32, {1});
  one.mutable_as<float>()[0] = l.weights.w13_global_scale->as<float>()[2 * 2 + 1];
  named(t, ex + "2.up_proj.weight_scale_2") = one;
  for (int e = 0; e < 3; ++e)
    for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
      HostTensor s = HostTensor::zeros(DType::F32, {});
      s.mutable_as<float>()[0] = 0.37f;
      t.emplace_back(ex + std::to_string(e) + "." + p + ".input_scale", s);
    }
  save_safetensors(dir / "m.safetensors", t);
  const Checkpoint ckpt = Checkpoint::open(dir / "m.safetensors");
  const auto layers = find_moe_layers(ckpt);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].layout, MoeLayout::ModelOpt);
  const LoadedMoeLayer got = load_moe_layer(ckpt, 2);
  expect_same(l.weights, got.weights);
  EXPECT_EQ(got.weights.format.activation_dtype, DType::BF16);
  EXPECT_THAT(got.scale_format, HasSubstr("NVFP4"));
  // inspect names the format; verify runs it on the CPU backend against float64.
  const CliResult ins = run_cli("inspect " + (dir / "m.safetensors") + " --layer 2", dir);
  EXPECT_EQ(ins.rc, 0) << ins.err;
  EXPECT_THAT(ins.out, HasSubstr("format NVFP4 (group 16, UE4M3 + global scales)"));
  EXPECT_THAT(ins.out, HasSubstr("input_scale"));
  const CliResult v = run_cli("verify " + (dir / "m.safetensors") + " --layer 2 --backend cpu --tokens 12", dir);
  EXPECT_EQ(v.rc, 0) << v.out << v.err;
  EXPECT_THAT(v.out, HasSubstr("NVFP4 with bf16 activations"));
  EXPECT_THAT(v.out, HasSubstr("PASS"));
}

TEST(Nvfp4Checkpoint, FusedNamesWithGlobalsOfEitherShape) {
  TempDir dir;
  const std::uint64_t seed = std::random_device{}();
  const LoadedMoeLayer l = nv_layer(seed, true);
  Tensors t = moe_layer_tensors(l, MoeLayout::Fused, "layers.4.ffn.");
  EXPECT_EQ(named(t, "layers.4.ffn.experts.w13_weight_scale").shape(), (Shape{3, 96, 5}));
  save_safetensors(dir / "f.safetensors", t);
  expect_same(l.weights, load_moe_layer(Checkpoint::open(dir / "f.safetensors"), 4).weights);
  // [E]: one global for gate and up, both columns.
  HostTensor g = HostTensor::zeros(DType::F32, {3});
  for (int e = 0; e < 3; ++e) g.mutable_as<float>()[e] = 0.5f + e;
  named(t, "layers.4.ffn.experts.w13_weight_scale_2") = g;
  save_safetensors(dir / "g.safetensors", t);
  const LoadedMoeLayer one = load_moe_layer(Checkpoint::open(dir / "g.safetensors"), 4);
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(one.weights.w13_global_scale->as<float>()[2 * e], 0.5f + e);
    EXPECT_EQ(one.weights.w13_global_scale->as<float>()[2 * e + 1], 0.5f + e);
  }
  // config.json torch_dtype float16 -> fp16 activations.
  write_file(dir / "config.json", std::vector<std::uint8_t>{'{', '"', 't', 'o', 'r', 'c', 'h', '_', 'd', 't', 'y', 'p', 'e', '"', ':', '"', 'f', 'l', 'o', 'a', 't', '1', '6', '"', '}'});
  const LoadedMoeLayer h = load_moe_layer(Checkpoint::open(dir / "f.safetensors"), 4);
  EXPECT_EQ(h.weights.format.activation_dtype, DType::F16);
  const CliResult v = run_cli("verify " + (dir / "f.safetensors") + " --layer 4 --backend cpu --tokens 9", dir);
  EXPECT_EQ(v.rc, 0) << v.out << v.err;
  EXPECT_THAT(v.out, HasSubstr("NVFP4 with fp16 activations"));
}

TEST(Nvfp4Checkpoint, MissingOrMalformedTensorsAreNamed) {
  TempDir dir;
  const LoadedMoeLayer l = nv_layer(std::random_device{}(), false);
  const std::string ex = "model.layers.2.mlp.experts.";
  auto load_err = [&](Tensors t) {
    save_safetensors(dir / "bad.safetensors", t);
    return error_of([&] { load_moe_layer(Checkpoint::open(dir / "bad.safetensors"), 2); });
  };
  // moe_layer_tensors makes fresh tensors on each call (copies of a HostTensor share their bytes).
  auto base = [&] { return moe_layer_tensors(l, MoeLayout::ModelOpt, "model.layers.2.mlp."); };
  Tensors t = base();
  t.erase(std::find_if(t.begin(), t.end(), [&](auto& p) { return p.first == ex + "1.up_proj.weight_scale_2"; }));
  EXPECT_THAT(load_err(t), HasSubstr("missing tensor '" + ex + "1.up_proj.weight_scale_2' for up global scale: the NVFP4 block scales '" + ex +
                                     "1.up_proj.weight_scale' need their fp32 global scale"));
  t = base();
  named(t, ex + "0.down_proj.weight_scale").mutable_as<std::uint8_t>()[7] = 0x7F;
  EXPECT_THAT(load_err(t), HasSubstr("tensor '" + ex + "0.down_proj.weight_scale': scale at index [2, 1] is the E4M3 NaN byte 0x7F"));
  t = base();
  named(t, ex + "2.gate_proj.weight_scale").mutable_as<std::uint8_t>()[0] = 0xC0;  // -2
  EXPECT_THAT(load_err(t), HasSubstr("is byte 192 (-2.000000), whose sign bit is set: NVFP4 block scales are unsigned (UE4M3)"));
  t = base();
  named(t, ex + "1.gate_proj.weight_scale_2").mutable_as<float>()[0] = NAN;
  EXPECT_THAT(load_err(t), HasSubstr("tensor '" + ex + "1.gate_proj.weight_scale_2': global scale nan at index [] must be finite and positive"));
  t = base();
  named(t, ex + "1.gate_proj.weight_scale_2").mutable_as<float>()[0] = 0.0f;
  EXPECT_THAT(load_err(t), HasSubstr("must be finite and positive"));
  t = base();
  named(t, ex + "0.up_proj.weight_scale") = HostTensor::zeros(DType::F8_E4M3, {48, 3});
  EXPECT_THAT(load_err(t), HasSubstr("tensor '" + ex + "0.up_proj.weight_scale' (scales) has shape [48, 3], expected [48, 5]"));
  t = base();
  t.erase(std::find_if(t.begin(), t.end(), [&](auto& p) { return p.first == ex + "2.down_proj.weight_scale"; }));
  EXPECT_THAT(load_err(t), HasSubstr("missing tensor '" + ex + "2.down_proj.weight_scale'"));
}

// bf16 experts -> `mxmoe quantize --format nvfp4` -> ModelOpt names, read back: each matrix's global is
// amax / 2688 and codes/scales follow ModelOpt's rule (formats/nvfp4.hpp) row by row.
TEST(Nvfp4Checkpoint, QuantizeWritesModelOptNvfp4AndTheLoaderReadsItBack) {
  TempDir dir;
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int E = 2, H = 64, I = 48;
  Tensors dense;
  std::vector<std::vector<float>> values;  // per tensor, the bf16-rounded floats
  for (int e = 0; e < E; ++e)
    for (const auto& [proj, rows, cols] : {std::tuple<const char*, int, int>{"gate_proj", I, H}, {"up_proj", I, H}, {"down_proj", H, I}}) {
      HostTensor t = HostTensor::zeros(DType::BF16, {rows, cols});
      std::vector<float> v(static_cast<std::size_t>(rows * cols));
      for (int i = 0; i < rows * cols; ++i) {
        t.mutable_as<std::uint16_t>()[i] = formats::float_to_bf16(nd(rng) * (e + 1));
        v[i] = formats::bf16_to_float(t.mutable_as<std::uint16_t>()[i]);
      }
      dense.emplace_back("model.layers.0.mlp.experts." + std::to_string(e) + "." + proj + ".weight", t);
      values.push_back(v);
    }
  save_safetensors(dir / "bf16.safetensors", dense);
  const CliResult q = run_cli("quantize " + (dir / "bf16.safetensors") + " " + (dir / "nv.safetensors") + " --format nvfp4", dir);
  ASSERT_EQ(q.rc, 0) << q.out << q.err;
  EXPECT_THAT(q.out, HasSubstr("(nvfp4, modelopt)"));
  const Checkpoint ckpt = Checkpoint::open(dir / "nv.safetensors");
  EXPECT_EQ(ckpt.info("model.layers.0.mlp.experts.1.down_proj.weight_scale").dtype_name, "F8_E4M3");
  EXPECT_EQ(ckpt.info("model.layers.0.mlp.experts.1.down_proj.weight_scale_2").dtype_name, "F32");
  const LoadedMoeLayer l = load_moe_layer(ckpt, 0);
  ASSERT_TRUE(l.weights.format.nvfp4());
  const auto& w = l.weights;
  for (int e = 0; e < E; ++e)
    for (int m = 0; m < 3; ++m) {
      const std::vector<float>& v = values[static_cast<std::size_t>(e * 3 + m)];
      float amax = 0;
      for (float x : v) amax = std::max(amax, std::fabs(x));
      const float g = m < 2 ? w.w13_global_scale->as<float>()[2 * e + m] : w.w2_global_scale->as<float>()[e];
      ASSERT_EQ(g, amax / 2688.0f) << "expert " << e << " matrix " << m;
      const int rows = m < 2 ? I : H, K = m < 2 ? H : I;
      std::vector<std::uint8_t> codes(static_cast<std::size_t>(rows * K)), scales(static_cast<std::size_t>(rows * K / 16));
      formats::nvfp4_quantize(v.data(), rows * K, g, codes.data(), scales.data());
      const std::uint8_t* sp = m < 2 ? w.w13_scale.as<std::uint8_t>() + (e * 2 * I + m * I) * (H / 16) : w.w2_scale.as<std::uint8_t>() + e * H * (I / 16);
      const std::uint8_t* pp = m < 2 ? w.w13.as<std::uint8_t>() + (e * 2 * I + m * I) * (H / 2) : w.w2.as<std::uint8_t>() + e * H * (I / 2);
      for (std::size_t i = 0; i < scales.size(); ++i) ASSERT_EQ(sp[i], scales[i]) << "scale " << i;
      for (std::size_t i = 0; i < codes.size(); ++i) ASSERT_EQ(formats::nibble_at(pp, static_cast<std::int64_t>(i)), codes[i]) << "code " << i;
    }
  // The quantisation error against the bf16 source is small; an NVFP4 layer is not rewritten as MXFP4.
  const CliResult v = run_cli("verify " + (dir / "nv.safetensors") + " --layer 0 --backend cpu --tokens 8 --source " + (dir / "bf16.safetensors"), dir);
  EXPECT_EQ(v.rc, 0) << v.out << v.err;
  EXPECT_THAT(v.out, HasSubstr("quantisation error"));
  const CliResult bad = run_cli("quantize " + (dir / "nv.safetensors") + " " + (dir / "mx.safetensors") + " --layout fused", dir);
  EXPECT_EQ(bad.rc, 2);
  EXPECT_THAT(bad.err, HasSubstr("is NVFP4 and cannot be converted to MXFP4 without loss; write it with --format nvfp4"));
  const CliResult fused = run_cli("quantize " + (dir / "nv.safetensors") + " " + (dir / "fused.safetensors") + " --format nvfp4 --layout fused", dir);
  ASSERT_EQ(fused.rc, 0) << fused.err;
  const LoadedMoeLayer back = load_moe_layer(Checkpoint::open(dir / "fused.safetensors"), 0);
  expect_same(w, back.weights);
  const CliResult gpt = run_cli("quantize " + (dir / "bf16.safetensors") + " " + (dir / "g.safetensors") + " --format nvfp4 --layout gpt-oss", dir);
  EXPECT_EQ(gpt.rc, 2);
  EXPECT_THAT(gpt.err, HasSubstr("--format nvfp4 is written as --layout modelopt (the default) or fused, not gpt-oss"));
}
