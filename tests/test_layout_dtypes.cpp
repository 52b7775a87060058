// Exact messages for tensors of the wrong dtype and for scales outside the usable range (issue 17,
// item 5): an anchor of a dtype no layout reads, a layer whose weights mix packed and float tensors,
// an expert left in bf16, and float scales that are powers of two E8M0 cannot hold or that overflow.
// Through the CLI each is exit 2 with the message, and the input file is left as it was.
#include <cmath>
#include <random>
#include <tuple>

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

// Runs `mxmoe ARGS` on `file`: refused (test::expect_cli_refuses), and the file byte for byte the same.
void expect_cli_refuses(const std::string& args, const std::string& file, const std::string& message) {
  const std::string before = read_text(file);
  test::expect_cli_refuses(args, message);
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
  expect_cli_refuses("inspect " + (dir / "i32.safetensors"), dir / "i32.safetensors", "has dtype I32");
  expect_cli_refuses("inspect " + (dir / "i32.safetensors") + " --layer 7", dir / "i32.safetensors", "has dtype I32");

  // BOOL has no mxmoe DType: the file is written by hand.
  const std::string header = "{\"" + w13 + "\":{\"dtype\":\"BOOL\",\"shape\":[2,64,16],\"data_offsets\":[0,2048]}}";
  write_file(dir / "bool.safetensors", raw_safetensors(header, 2048));
  expect_cli_refuses("inspect " + (dir / "bool.safetensors"), dir / "bool.safetensors",
                     "tensor '" + w13 + "' (the weights of an MoE layer) has dtype BOOL; " + expected);
  expect_cli_refuses("quantize " + (dir / "bool.safetensors") + " " + (dir / "out.safetensors") + " --layout fused",
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
  expect_cli_refuses("inspect " + (dir / "m.safetensors") + " --layer 7", dir / "m.safetensors", message);
  expect_cli_refuses("quantize " + (dir / "m.safetensors") + " " + (dir / "out.safetensors") + " --layout fused",
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
  expect_cli_refuses("verify " + (dir / "m.safetensors") + " --layer 7 --backend cpu", dir / "m.safetensors", message);
}

TEST(LayoutDtypes, FloatScalesOutsideE8m0OrNotPowersOfTwoSaySo) {
  TempDir dir;
  const std::string s = "tensor 'model.layers.7.mlp.experts.w2_weight_scale': scale ";
  save_safetensors(dir / "tiny.safetensors", fused_with_f32_scale(std::ldexp(1.0f, -130)));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "tiny.safetensors"), 7); }),
              HasSubstr("is 2^-130, an exact power of two outside E8M0's range 2^-127..2^127"));
  expect_cli_refuses("verify " + (dir / "tiny.safetensors") + " --layer 7 --backend cpu", dir / "tiny.safetensors", "outside E8M0's range");
  save_safetensors(dir / "sub.safetensors", fused_with_f32_scale(std::ldexp(1.0f, -149)));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "sub.safetensors"), 7); }),
              HasSubstr("is 2^-149, an exact power of two outside E8M0's range 2^-127..2^127"));
  save_safetensors(dir / "inf.safetensors", fused_with_f32_scale(INFINITY));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "inf.safetensors"), 7); }),
              HasSubstr(s + "inf at index [0, 1, 2] is not an exact power of two"));
  save_safetensors(dir / "nan.safetensors", fused_with_f32_scale(NAN));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "nan.safetensors"), 7); }), HasSubstr(s + "at index [0, 1, 2] is NaN"));
  save_safetensors(dir / "odd.safetensors", fused_with_f32_scale(3.0f));
  EXPECT_THAT(error_of([&] { load_moe_layer(Checkpoint::open(dir / "odd.safetensors"), 7); }),
              HasSubstr(s + "3 at index [0, 1, 2] is not an exact power of two"));
}

namespace {

// A fused layer whose w13 block (expert 1, row 3, group 1) has E8M0 byte `scale` and random codes of
// magnitude index (0..7) at most `others_max`, except element `at`, whose magnitude index is `at_code`.
Tensors fused_with_block(std::uint8_t scale, int others_max, int at, int at_code, std::uint64_t seed) {
  Tensors t = layer_tensors(MoeLayout::Fused, "model.layers.7.mlp.", seed);
  const std::int64_t H = 64, I = 96, row = 1 * 2 * I + 3;
  named(t, "model.layers.7.mlp.experts.w13_weight_scale").mutable_as<std::uint8_t>()[row * (H / 32) + 1] = scale;
  auto* packed = named(t, "model.layers.7.mlp.experts.w13_weight").mutable_as<std::uint8_t>() + row * (H / 2) + 16;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 32; ++i) {
    const int mag = i == at ? at_code : static_cast<int>(rng() % static_cast<unsigned>(others_max + 1));
    const std::uint8_t code = static_cast<std::uint8_t>(mag | (rng() % 2 ? 8 : 0));
    packed[i / 2] = static_cast<std::uint8_t>(i % 2 ? (packed[i / 2] & 0x0f) | (code << 4) : (packed[i / 2] & 0xf0) | code);
  }
  return t;
}

}  // namespace

// Issue 16: every E8M0 byte 0x00..0xFE is a scale and is handled exactly; only a block where a
// dequantised weight is infinite in float32 (|code| x 2^(b-127) >= 2^128) is refused, by name.
TEST(LayoutDtypes, EveryE8m0ByteLoadsUnlessABlockOverflowsFloat32) {
  TempDir dir;
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // Byte 254 (2^127) with codes up to 1.5 and byte 253 (2^126) with codes up to 3: finite, loaded
  // exactly, and the oracle's output is finite.
  for (const auto& [byte, max_code] : {std::pair<std::uint8_t, int>{254, 3}, {253, 5}, {252, 7}, {0, 7}}) {
    save_safetensors(dir / "ok.safetensors", fused_with_block(byte, max_code, 5, max_code, seed));
    const LoadedMoeLayer l = load_moe_layer(Checkpoint::open(dir / "ok.safetensors"), 7);
    EXPECT_EQ(l.weights.w13_scale.as<std::uint8_t>()[(2 * 96 + 3) * 2 + 1], byte);
    EXPECT_NO_THROW(l.weights.validate());
  }
  // 2^127 as a float32 scale converts to byte 254 and loads when its block stays finite.
  {
    Tensors t = fused_with_block(254, 3, 0, 3, seed);
    HostTensor& sc = named(t, "model.layers.7.mlp.experts.w13_weight_scale");
    HostTensor f = HostTensor::zeros(DType::F32, sc.shape());
    for (std::int64_t i = 0; i < sc.numel(); ++i) f.mutable_as<float>()[i] = std::ldexp(1.0f, sc.as<std::uint8_t>()[i] - 127);
    sc = std::move(f);
    save_safetensors(dir / "f32.safetensors", t);
    const LoadedMoeLayer l = load_moe_layer(Checkpoint::open(dir / "f32.safetensors"), 7);
    EXPECT_EQ(l.weights.w13_scale.as<std::uint8_t>()[(2 * 96 + 3) * 2 + 1], 254);
  }
  // Byte 254 with a code of magnitude 2, byte 253 with magnitude 4: refused, naming all of it.
  const std::string where = "tensor 'model.layers.7.mlp.experts.w13_weight_scale': scale at index [1, 3, 1] (expert 1, gate row 3, group 1) is E8M0 byte ";
  for (const auto& [byte, code, shown] : {std::tuple<std::uint8_t, int, std::string>{254, 4, "2"}, {253, 6, "4"}, {254, 7, "6"}}) {
    // The other codes of the block stay below the overflow, so element 9 is the one named.
    save_safetensors(dir / "bad.safetensors", fused_with_block(byte, byte == 254 ? 3 : 5, 9, code, seed));
    const std::string e = error_of([&] { load_moe_layer(Checkpoint::open(dir / "bad.safetensors"), 7); });
    EXPECT_THAT(e, HasSubstr(where + std::to_string(byte) + " (2^" + std::to_string(byte - 127) + "), and with E2M1 code "));
    EXPECT_THAT(e, HasSubstr(shown + ") of its block the weight is infinite in float32"));
    expect_cli_refuses("verify " + (dir / "bad.safetensors") + " --layer 7 --backend cpu", dir / "bad.safetensors", where);
  }
}
