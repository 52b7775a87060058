// Exact messages for tensors of the wrong dtype and for scales outside the usable range (issue 17,
// item 5): an anchor of a dtype no layout reads, a layer whose weights mix packed and float tensors,
// an expert left in bf16, and float scales that are powers of two E8M0 cannot hold or that overflow.
// Through the CLI each is exit 2 with the message, and the input file is left as it was.
#include <cmath>

#include "test_checkpoint_util.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

using Tensors = std::vector<std::pair<std::string, HostTensor>>;

Tensors layer_tensors(MoeLayout layout, const std::string& prefix, std::uint64_t seed = 5) {
  SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 96;
  spec.with_biases = layout != MoeLayout::DeepSeekV4;
  spec.with_router = true;
  spec.seed = seed;
  LoadedMoeLayer l;
  l.weights = make_synthetic_weights(spec);
  if (layout == MoeLayout::GptOss) l.weights.correction_bias.reset();
  return moe_layer_tensors(l, layout, prefix);
}

HostTensor& named(Tensors& t, const std::string& name) {
  for (auto& [n, v] : t)
    if (n == name) return v;
  throw std::runtime_error("test: no tensor " + name);
}

// A fused layer whose scales are float32 powers of two, one of them replaced by `scale`.
Tensors fused_with_f32_scale(float scale) {
  Tensors t = layer_tensors(MoeLayout::Fused, "model.layers.7.mlp.");
  HostTensor& s = named(t, "model.layers.7.mlp.experts.w2_weight_scale");
  HostTensor f = HostTensor::zeros(DType::F32, s.shape());
  for (std::int64_t i = 0; i < s.numel(); ++i) f.mutable_as<float>()[i] = std::ldexp(1.0f, s.as<std::uint8_t>()[i] - 127);
  f.mutable_as<float>()[5] = scale;
  s = std::move(f);
  return t;
}

// Runs `mxmoe ARGS` on `file` and checks exit 2, the message, and that the file is byte for byte the same.
void expect_cli_refuses(const TempDir& dir, const std::string& args, const std::string& file, const std::string& message) {
  const std::string before = read_text(file);
  const CliResult r = run_cli(args, dir);
  EXPECT_EQ(r.rc, 2) << args << "\n" << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr(message)) << args;
  EXPECT_EQ(read_text(file), before) << "the input changed: " << file;
}

}  // namespace

TEST(LayoutDtypes, AnAnchorOfADtypeNoLayoutReadsIsNamedWithTheDtypesExpected) {
  TempDir dir;
  const std::string w13 = "model.layers.7.mlp.experts.w13_weight";
  const std::string expected = "expected packed E2M1 (U8, I8 or F4) for an MXFP4 layer or BF16, F16 or F32 for one to quantize";
  Tensors t = layer_tensors(MoeLayout::Fused, "model.layers.7.mlp.");
  named(t, w13) = HostTensor::zeros(DType::I32, {4, 192, 8});
  save_safetensors(dir / "i32.safetensors", t);
  EXPECT_THAT(error_of([&] { find_moe_layers(Checkpoint::open(dir / "i32.safetensors")); }),
              HasSubstr("tensor '" + w13 + "' (the weights of an MoE layer) has dtype I32; " + expected));
  expect_cli_refuses(dir, "inspect " + (dir / "i32.safetensors"), dir / "i32.safetensors", "has dtype I32");
  expect_cli_refuses(dir, "inspect " + (dir / "i32.safetensors") + " --layer 7", dir / "i32.safetensors", "has dtype I32");

  // BOOL has no mxmoe DType: the file is written by hand.
  const std::string header = "{\"" + w13 + "\":{\"dtype\":\"BOOL\",\"shape\":[2,64,16],\"data_offsets\":[0,2048]}}";
  write_file(dir / "bool.safetensors", raw_safetensors(header, 2048));
  expect_cli_refuses(dir, "inspect " + (dir / "bool.safetensors"), dir / "bool.safetensors",
                     "tensor '" + w13 + "' (the weights of an MoE layer) has dtype BOOL; " + expected);
  expect_cli_refuses(dir, "quantize " + (dir / "bool.safetensors") + " " + (dir / "out.safetensors") + " --layout fused",
                     dir / "bool.safetensors", "has dtype BOOL");
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
}

TEST(LayoutDtypes, AFloatW13InAPackedLayerNamesW13) {
  TempDir dir;
  const std::string ex = "model.layers.7.mlp.experts.";
  Tensors t = layer_tensors(MoeLayout::Fused, "model.layers.7.mlp.");
  named(t, ex + "w13_weight") = HostTensor::zeros(DType::F16, {4, 192, 64});
  save_safetensors(dir / "m.safetensors", t);
  const std::string message = "its weights mix dtypes: '" + ex + "w13_weight' is F16 (float) but '" + ex + "w2_weight' is U8 (packed E2M1)";
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "m.safetensors"), 7); }), HasSubstr(message));
  expect_cli_refuses(dir, "inspect " + (dir / "m.safetensors") + " --layer 7", dir / "m.safetensors", message);
  expect_cli_refuses(dir, "quantize " + (dir / "m.safetensors") + " " + (dir / "out.safetensors") + " --layout fused",
                     dir / "m.safetensors", message);
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
}

TEST(LayoutDtypes, AnExpertLeftInBf16IsNamed) {
  TempDir dir;
  Tensors t = layer_tensors(MoeLayout::DeepSeekV4, "layers.7.ffn.");
  named(t, "layers.7.ffn.experts.3.w1.weight") = HostTensor::zeros(DType::BF16, {96, 64});
  save_safetensors(dir / "m.safetensors", t);
  const Checkpoint ckpt = Checkpoint::open(dir / "m.safetensors");
  const auto layers = find_moe_layers(ckpt);  // one MXFP4 layer, not a dsv4 and a dense twin
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].layout, MoeLayout::DeepSeekV4);
  EXPECT_EQ(layers[0].num_experts, 4);
  const std::string message = "expert 3's 'layers.7.ffn.experts.3.w1.weight' is BF16 (float): expert 3 was left unquantized";
  EXPECT_THAT(error_of([&] { load_moe_layer(ckpt, 7); }), HasSubstr(message));
  EXPECT_THAT(error_of([&] { load_moe_layer(ckpt, 7); }), HasSubstr("'layers.7.ffn.experts.0.w1.weight' is I8 (packed E2M1)"));
  expect_cli_refuses(dir, "verify " + (dir / "m.safetensors") + " --layer 7 --backend cpu", dir / "m.safetensors", message);
}

TEST(LayoutDtypes, FloatScalesOutsideTheUsableRangeSaySo) {
  TempDir dir;
  const std::string s = "tensor 'model.layers.7.mlp.experts.w2_weight_scale': scale ";
  save_safetensors(dir / "tiny.safetensors", fused_with_f32_scale(std::ldexp(1.0f, -130)));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "tiny.safetensors"), 7); }),
              HasSubstr("is 2^-130, an exact power of two outside E8M0's range 2^-127..2^127"));
  save_safetensors(dir / "huge.safetensors", fused_with_f32_scale(std::ldexp(1.0f, 127)));
  const std::string range = "usable scales are 2^-127..2^125 (E8M0 bytes 0..252)";
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "huge.safetensors"), 7); }), HasSubstr("is 2^127: " + range));
  expect_cli_refuses(dir, "verify " + (dir / "huge.safetensors") + " --layer 7 --backend cpu", dir / "huge.safetensors", range);
  save_safetensors(dir / "odd.safetensors", fused_with_f32_scale(3.0f));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "odd.safetensors"), 7); }),
              HasSubstr(s + "3 at index [0, 1, 2] is not an exact power of two"));
  // The same bound for E8M0 bytes: 254 is 2^127, valid E8M0, but weights would overflow.
  Tensors t = layer_tensors(MoeLayout::Fused, "model.layers.7.mlp.");
  named(t, "model.layers.7.mlp.experts.w13_weight_scale").mutable_as<std::uint8_t>()[2] = 254;
  save_safetensors(dir / "byte.safetensors", t);
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "byte.safetensors"), 7); }),
              HasSubstr("scale at index [0, 1, 0] is 2^127 (E8M0 byte 254): " + range));
  // 2^125, the largest usable scale, loads.
  save_safetensors(dir / "max.safetensors", fused_with_f32_scale(std::ldexp(1.0f, 125)));
  EXPECT_NO_THROW(load_moe_layer(Checkpoint::open(dir / "max.safetensors"), 7));
}
