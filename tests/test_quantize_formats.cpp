// What quantize reads and writes (issue 17, item 5): Hugging Face's bf16 gpt-oss experts are quantised
// exactly as the same weights in canonical order; tensors of any dtype (BOOL, F8_E5M2) are copied
// through with their dtype and bytes; DeepSeek V4 output is I8 + F8_E8M0 with the router as stored.
#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "test_checkpoint_util.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

using Tensors = std::vector<std::pair<std::string, HostTensor>>;

HostTensor random_bf16(SplitMix64& rng, const Shape& shape) {
  HostTensor t = HostTensor::zeros(DType::BF16, shape);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.mutable_as<std::uint16_t>()[i] = formats::float_to_bf16(static_cast<float>(rng.normal() * (i % 89 == 0 ? 0.7 : 0.05)));
  return t;
}

std::uint16_t at(const HostTensor& t, std::int64_t i) { return t.as<std::uint16_t>()[i]; }

bool same_file_bytes(const Checkpoint& a, const std::string& na, const Checkpoint& b, const std::string& nb) {
  const TensorInfo &ia = a.info(na), &ib = b.info(nb);
  if (ia.dtype_name != ib.dtype_name || ia.shape != ib.shape || ia.end - ia.begin != ib.end - ib.begin) return false;
  const auto n = static_cast<std::int64_t>(ia.end - ia.begin);
  return same_bytes(a.view_as(na, DType::U8, {n}), b.view_as(nb, DType::U8, {n}));
}

}  // namespace

TEST(QuantizeFormats, HuggingFaceBf16GptOssQuantisesAsTheCanonicalOrder) {
  TempDir dir;
  const std::int64_t E = 3, H = 64, I = 96;
  SplitMix64 rng(17);
  const std::string hf = "model.layers.2.mlp.";
  const HostTensor gate_up = random_bf16(rng, {E, H, 2 * I}), down = random_bf16(rng, {E, I, H});
  const HostTensor gate_up_bias = random_bf16(rng, {E, 2 * I}), down_bias = random_bf16(rng, {E, H});
  const HostTensor router = random_bf16(rng, {E, H}), router_bias = random_bf16(rng, {E});
  save_safetensors(dir / "hf.safetensors", {{hf + "experts.gate_up_proj", gate_up}, {hf + "experts.gate_up_proj_bias", gate_up_bias},
                                            {hf + "experts.down_proj", down}, {hf + "experts.down_proj_bias", down_bias},
                                            {hf + "router.weight", router}, {hf + "router.bias", router_bias}});
  // The same weights in canonical order: w13 row r < I is gate column 2r, row I + r up column 2r + 1
  // (GptOssExperts: gate_up[..., ::2], gate_up[..., 1::2]); w2 [E, H, I] is down_proj transposed.
  HostTensor w13 = HostTensor::zeros(DType::BF16, {E, 2 * I, H}), w2 = HostTensor::zeros(DType::BF16, {E, H, I});
  HostTensor b13 = HostTensor::zeros(DType::BF16, {E, 2 * I});
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t r = 0; r < 2 * I; ++r) {
      const std::int64_t col = r < I ? 2 * r : 2 * (r - I) + 1;
      for (std::int64_t k = 0; k < H; ++k) w13.mutable_as<std::uint16_t>()[(e * 2 * I + r) * H + k] = at(gate_up, (e * H + k) * 2 * I + col);
      b13.mutable_as<std::uint16_t>()[e * 2 * I + r] = at(gate_up_bias, e * 2 * I + col);
    }
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < I; ++i) w2.mutable_as<std::uint16_t>()[(e * H + h) * I + i] = at(down, (e * I + i) * H + h);
  }
  save_safetensors(dir / "canon.safetensors", {{"layers.2.experts.w13_weight", w13}, {"layers.2.experts.w13_bias", b13},
                                               {"layers.2.experts.w2_weight", w2}, {"layers.2.experts.w2_bias", down_bias}});

  const Checkpoint in = Checkpoint::open(dir / "hf.safetensors");
  const auto layers = find_moe_layers(in);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].layout, MoeLayout::DenseGptOss);
  EXPECT_STREQ(moe_layout_name(layers[0].layout), "dense-gpt-oss");
  const LoadedMoeLayer got = quantize_moe_layer(in, layers[0]);
  const Checkpoint canon_ckpt = Checkpoint::open(dir / "canon.safetensors");
  const LoadedMoeLayer want = quantize_moe_layer(canon_ckpt, find_moe_layer(canon_ckpt, 2));
  EXPECT_TRUE(same_bytes(got.weights.w13, want.weights.w13));
  EXPECT_TRUE(same_bytes(got.weights.w13_scale, want.weights.w13_scale));
  EXPECT_TRUE(same_bytes(got.weights.w2, want.weights.w2));
  EXPECT_TRUE(same_bytes(got.weights.w2_scale, want.weights.w2_scale));
  EXPECT_TRUE(same_bytes(*got.weights.w13_bias, *want.weights.w13_bias));
  EXPECT_TRUE(same_bytes(*got.weights.w2_bias, *want.weights.w2_bias));
  ASSERT_TRUE(got.router_logit_bias.has_value());  // router.bias is a logit bias, as in gpt-oss
  EXPECT_FALSE(got.weights.correction_bias.has_value());

  // The CLI writes it as MXFP4 gpt-oss (router.bias kept), leaving the input as it was.
  const std::string before = read_text(dir / "hf.safetensors");
  const CliResult r = run_cli("quantize " + (dir / "hf.safetensors") + " " + (dir / "out" + std::string(".safetensors")) + " --layout gpt-oss", dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(read_text(dir / "hf.safetensors"), before);
  const Checkpoint out = Checkpoint::open(dir / "out.safetensors");
  const LoadedMoeLayer back = load_moe_layer(out, 2);
  EXPECT_TRUE(same_bytes(back.weights.w13, want.weights.w13));
  EXPECT_TRUE(same_bytes(back.weights.w2, want.weights.w2));
  EXPECT_TRUE(same_file_bytes(in, hf + "router.weight", out, hf + "router.weight"));  // bf16 router kept as stored
}

TEST(QuantizeFormats, EveryOtherDtypeIsCopiedThroughAndDsv4IsI8WithE8m0Scales) {
  TempDir dir;
  std::filesystem::create_directory(dir / "model");
  SplitMix64 rng(3);
  const std::int64_t E = 2, H = 64, I = 32;
  Tensors layer;
  for (int e = 0; e < E; ++e)
    for (const char* w : {"w1", "w3", "w2"})
      layer.push_back({"layers.0.ffn.experts." + std::to_string(e) + "." + w + ".weight",
                       random_bf16(rng, std::string(w) == "w2" ? Shape{H, I} : Shape{I, H})});
  layer.push_back({"layers.0.ffn.gate.weight", random_bf16(rng, {E, H})});
  save_safetensors(dir / "model/experts.safetensors", layer);
  // Tensors of dtypes mxmoe does not compute with, written by hand (5 BOOL bytes, 3 F8_E5M2 bytes).
  const std::string header = "{\"mask\":{\"dtype\":\"BOOL\",\"shape\":[5],\"data_offsets\":[0,5]},"
                             "\"fp8\":{\"dtype\":\"F8_E5M2\",\"shape\":[3],\"data_offsets\":[5,8]}}";
  write_file(dir / "model/other.safetensors", raw_safetensors(header, 8));
  const std::string before_a = read_text(dir / "model/experts.safetensors"), before_b = read_text(dir / "model/other.safetensors");

  const CliResult r = run_cli("quantize " + (dir / "model") + " " + (dir / "out.safetensors") + " --layout dsv4", dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(read_text(dir / "model/experts.safetensors"), before_a);
  EXPECT_EQ(read_text(dir / "model/other.safetensors"), before_b);
  const Checkpoint in = Checkpoint::open(dir / "model"), out = Checkpoint::open(dir / "out.safetensors");
  EXPECT_TRUE(same_file_bytes(in, "mask", out, "mask"));
  EXPECT_TRUE(same_file_bytes(in, "fp8", out, "fp8"));
  EXPECT_EQ(out.info("mask").dtype_name, "BOOL");
  EXPECT_EQ(out.info("fp8").dtype_name, "F8_E5M2");
  const TensorInfo& w1 = out.info("layers.0.ffn.experts.1.w1.weight");
  EXPECT_EQ(w1.dtype_name, "I8");  // packed E2M1 pairs, as the released DeepSeek V4 checkpoints store them
  EXPECT_EQ(w1.shape, (Shape{I, H / 2}));
  EXPECT_EQ(out.info("layers.0.ffn.experts.1.w2.scale").dtype_name, "F8_E8M0");
  EXPECT_TRUE(same_file_bytes(in, "layers.0.ffn.gate.weight", out, "layers.0.ffn.gate.weight"));  // BF16, as stored
  // And it loads back to what quantising the source gives.
  const LoadedMoeLayer want = quantize_moe_layer(in, find_moe_layer(in, 0)), got = load_moe_layer(out, 0);
  EXPECT_TRUE(same_bytes(got.weights.w13, want.weights.w13));
  EXPECT_TRUE(same_bytes(got.weights.w2_scale, want.weights.w2_scale));
  EXPECT_TRUE(same_bytes(*got.weights.router_weight, *want.weights.router_weight));
}
