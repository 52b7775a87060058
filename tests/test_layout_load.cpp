// Layout resolution: each MXFP4 layout written from random canonical weights loads back bit-exact,
// under any prefix and every alias; every malformed layer is refused with a named error.
#include <algorithm>
#include <cmath>

#include "formats/mxfp4.hpp"
#include "test_checkpoint_util.hpp"

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

using Tensors = std::vector<std::pair<std::string, HostTensor>>;

LoadedMoeLayer random_layer(MoeLayout layout, std::uint64_t seed, int E = 4, int H = 64, int I = 96) {
  SyntheticSpec spec;
  spec.num_experts = E;
  spec.hidden = H;
  spec.inter = I;
  spec.with_biases = layout != MoeLayout::DeepSeekV4;  // dsv4 has no expert biases
  spec.with_router = true;
  spec.seed = seed;
  LoadedMoeLayer l;
  l.weights = make_synthetic_weights(spec);
  if (layout == MoeLayout::GptOss) {  // gpt-oss has a router logit bias in place of a correction bias
    l.router_logit_bias = l.weights.correction_bias;
    l.weights.correction_bias.reset();
  }
  return l;
}

void expect_same(const LoadedMoeLayer& got, const LoadedMoeLayer& want) {
  const auto &g = got.weights, &w = want.weights;
  EXPECT_EQ(g.num_experts, w.num_experts);
  EXPECT_EQ(g.hidden, w.hidden);
  EXPECT_EQ(g.inter, w.inter);
  EXPECT_TRUE(same_bytes(g.w13, w.w13));
  EXPECT_TRUE(same_bytes(g.w13_scale, w.w13_scale));
  EXPECT_TRUE(same_bytes(g.w2, w.w2));
  EXPECT_TRUE(same_bytes(g.w2_scale, w.w2_scale));
  auto same_opt = [](const std::optional<HostTensor>& a, const std::optional<HostTensor>& b, const char* what) {
    ASSERT_EQ(a.has_value(), b.has_value()) << what;
    if (a) {
      EXPECT_TRUE(same_bytes(*a, *b)) << what;
    }
  };
  same_opt(g.w13_bias, w.w13_bias, "w13_bias");
  same_opt(g.w2_bias, w.w2_bias, "w2_bias");
  same_opt(g.router_weight, w.router_weight, "router_weight");
  same_opt(g.correction_bias, w.correction_bias, "correction_bias");
  same_opt(got.router_logit_bias, want.router_logit_bias, "router_logit_bias");
}

Checkpoint save_and_open(const TempDir& dir, const Tensors& t, const std::string& name = "m.safetensors") {
  save_safetensors(dir / name, t);
  return Checkpoint::open(dir / name);
}

HostTensor& tensor_named(Tensors& t, const std::string& name) {
  for (auto& [n, v] : t)
    if (n == name) return v;
  throw std::runtime_error("test: no tensor " + name);
}

void rename(Tensors& t, const std::string& from, const std::string& to) {
  for (auto& [n, v] : t)
    if (n == from) n = to;
}

void erase(Tensors& t, const std::string& name) {
  t.erase(std::remove_if(t.begin(), t.end(), [&](const auto& p) { return p.first == name; }), t.end());
}

// A copy of `scales` (E8M0 bytes) as float32 powers of two.
HostTensor as_f32_scales(const HostTensor& scales) {
  HostTensor f = HostTensor::zeros(DType::F32, scales.shape());
  for (std::int64_t i = 0; i < scales.numel(); ++i)
    f.mutable_as<float>()[i] = static_cast<float>(std::ldexp(1.0, scales.as<std::uint8_t>()[i] - 127));
  return f;
}

struct Case {
  MoeLayout layout;
  std::string prefix;
};

class LayoutRoundTrip : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(LayoutRoundTrip, LoadsBackBitExact) {
  const Case c = GetParam();
  TempDir dir;
  const LoadedMoeLayer want = random_layer(c.layout, 42);
  Tensors t = moe_layer_tensors(want, c.layout, c.prefix);
  t.emplace_back("model.embed_tokens.weight", HostTensor::zeros(DType::BF16, {8, 64}));
  const Checkpoint ckpt = save_and_open(dir, t);

  const auto layers = find_moe_layers(ckpt);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].layer, 7);
  EXPECT_EQ(layers[0].layout, c.layout);
  EXPECT_EQ(layers[0].module_prefix, c.prefix);
  EXPECT_EQ(layers[0].num_experts, 4);
  const LoadedMoeLayer got = load_moe_layer(ckpt, 7);
  expect_same(got, want);
  EXPECT_EQ(got.scale_format, "E8M0");
}

INSTANTIATE_TEST_SUITE_P(
    EveryLayoutAndPrefix, LayoutRoundTrip,
    ::testing::Values(Case{MoeLayout::DeepSeekV4, "layers.7.ffn."}, Case{MoeLayout::DeepSeekV4, "model.layers.7.ffn."},
                      Case{MoeLayout::Fused, "model.layers.7.mlp."}, Case{MoeLayout::Fused, "language_model.model.layers.7.block_sparse_moe."},
                      Case{MoeLayout::GptOss, "model.layers.7.mlp."}, Case{MoeLayout::GptOss, "layers.7."}),
    [](const auto& info) {
      std::string s = std::string(moe_layout_name(info.param.layout)) + "_" + info.param.prefix;
      for (auto& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

TEST(LayoutLoad, FusedBytesAreViewsOfTheMappedFile) {
  TempDir dir;
  const Checkpoint ckpt = save_and_open(dir, moe_layer_tensors(random_layer(MoeLayout::Fused, 1), MoeLayout::Fused, "model.layers.7.mlp."));
  const LoadedMoeLayer got = load_moe_layer(ckpt, 7);
  EXPECT_EQ(got.weights.w13.data(), ckpt.view("model.layers.7.mlp.experts.w13_weight").data());
  EXPECT_EQ(got.weights.w2_scale.data(), ckpt.view("model.layers.7.mlp.experts.w2_weight_scale").data());
  for (const auto& m : got.matches)
    if (m.role == "w13" || m.role == "w2" || m.role == "w13_scale" || m.role == "w2_scale") {
      EXPECT_TRUE(m.zero_copy) << m.role;
    }
}

TEST(LayoutLoad, SecondAliasesLoadAndTheFirstWinsWhenBothArePresent) {
  TempDir dir;
  const LoadedMoeLayer want = random_layer(MoeLayout::Fused, 2);
  const std::string ex = "model.layers.7.mlp.experts.";
  Tensors t = moe_layer_tensors(want, MoeLayout::Fused, "model.layers.7.mlp.");
  rename(t, ex + "w13_weight_scale", ex + "w13_weight_scale_inv");
  rename(t, ex + "w2_weight_scale", ex + "w2_weight_scale_inv");
  rename(t, ex + "w13_weight_bias", ex + "w13_bias");
  rename(t, ex + "w2_weight_bias", ex + "w2_bias");
  {
    const LoadedMoeLayer got = load_moe_layer(save_and_open(dir, t, "a.safetensors"), 7);
    expect_same(got, want);
    for (const auto& m : got.matches)
      if (m.role == "w13_scale") {
        EXPECT_EQ(m.alias, "w13_weight_scale_inv");
      }
  }
  // Both names present, with different contents: the first alias of the table is taken.
  const LoadedMoeLayer other = random_layer(MoeLayout::Fused, 3);
  t.emplace_back(ex + "w13_weight_scale", other.weights.w13_scale);
  const LoadedMoeLayer got = load_moe_layer(save_and_open(dir, t, "b.safetensors"), 7);
  EXPECT_TRUE(same_bytes(got.weights.w13_scale, other.weights.w13_scale));
}

TEST(LayoutLoad, Float32PowerOfTwoScalesBecomeE8M0Losslessly) {
  for (MoeLayout layout : {MoeLayout::Fused, MoeLayout::GptOss, MoeLayout::DeepSeekV4}) {
    SCOPED_TRACE(moe_layout_name(layout));
    TempDir dir;
    const LoadedMoeLayer want = random_layer(layout, 4);
    Tensors t = moe_layer_tensors(want, layout, "model.layers.7.mlp.");
    for (auto& [name, v] : t)
      if (name.find("scale") != std::string::npos) v = as_f32_scales(v);
    const LoadedMoeLayer got = load_moe_layer(save_and_open(dir, t), 7);
    expect_same(got, want);
    EXPECT_THAT(got.scale_format, HasSubstr("converted to E8M0"));
  }
}

TEST(LayoutLoad, NonPowerOfTwoFloatScaleIsRefusedNamingTensorAndIndex) {
  TempDir dir;
  const std::string name = "model.layers.7.mlp.experts.w2_weight_scale";
  Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 5), MoeLayout::Fused, "model.layers.7.mlp.");
  HostTensor f = as_f32_scales(tensor_named(t, name));
  f.mutable_as<float>()[1 * 64 * 3 + 5 * 3 + 2] = 0.3f;  // index [1, 5, 2] of [4, 64, 3]
  tensor_named(t, name) = f;
  EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t), 7); }),
              AllOf(HasSubstr("tensor '" + name + "'"), HasSubstr("scale 0.300000012 at index [1, 5, 2] is not an exact power of two")));
}

TEST(LayoutLoad, NaNScalesAreRefusedInEveryEncoding) {
  TempDir dir;
  const std::string fused = "model.layers.7.mlp.experts.w13_weight_scale";
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 6), MoeLayout::Fused, "model.layers.7.mlp.");
    HostTensor s = HostTensor::zeros(DType::F8_E8M0, tensor_named(t, fused).shape());
    std::copy_n(tensor_named(t, fused).as<std::uint8_t>(), s.nbytes(), s.mutable_as<std::uint8_t>());
    s.mutable_as<std::uint8_t>()[2 * 192 * 2 + 7 * 2 + 1] = 0xFF;  // [2, 7, 1] of [4, 192, 2]
    tensor_named(t, fused) = s;
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "a.safetensors"), 7); }),
                AllOf(HasSubstr("tensor '" + fused + "'"), HasSubstr("scale at index [2, 7, 1] is the E8M0 NaN byte 0xFF")));
    HostTensor f = as_f32_scales(tensor_named(t, fused));
    f.mutable_as<float>()[2 * 192 * 2 + 7 * 2 + 1] = std::nanf("");
    tensor_named(t, fused) = f;
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "b.safetensors"), 7); }),
                AllOf(HasSubstr("tensor '" + fused + "'"), HasSubstr("scale at index [2, 7, 1] is NaN")));
  }
  {
    const std::string gpt = "model.layers.7.mlp.experts.down_proj_scales";
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::GptOss, 7), MoeLayout::GptOss, "model.layers.7.mlp.");
    tensor_named(t, gpt).mutable_as<std::uint8_t>()[5] = 0xFF;  // [0, 1, 2] of [4, 64, 3]
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "c.safetensors"), 7); }),
                AllOf(HasSubstr("tensor '" + gpt + "'"), HasSubstr("index [0, 1, 2] is the E8M0 NaN byte 0xFF")));
  }
}

TEST(LayoutLoad, MissingTensorsAreNamed) {
  TempDir dir;
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 8), MoeLayout::Fused, "model.layers.7.mlp.");
    erase(t, "model.layers.7.mlp.experts.w2_weight_scale");
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "a.safetensors"), 7); }),
                HasSubstr("missing tensor 'model.layers.7.mlp.experts.w2_weight_scale' (also tried "
                          "'model.layers.7.mlp.experts.w2_weight_scale_inv') for w2_scale"));
  }
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::DeepSeekV4, 9), MoeLayout::DeepSeekV4, "layers.7.ffn.");
    erase(t, "layers.7.ffn.experts.2.w3.weight");
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "b.safetensors"), 7); }),
                HasSubstr("missing tensor 'layers.7.ffn.experts.2.w3.weight' for up (w3)"));
  }
}

TEST(LayoutLoad, WrongShapesAndDtypesAreNamed) {
  TempDir dir;
  const std::string ex = "model.layers.7.mlp.experts.";
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 10), MoeLayout::Fused, "model.layers.7.mlp.");
    tensor_named(t, ex + "w2_weight") = HostTensor::zeros(DType::U8, {4, 64, 32});
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "a.safetensors"), 7); }),
                HasSubstr("tensor '" + ex + "w2_weight' (w2, logical elements) has shape [4, 64, 64], expected [4, 64, 96]"));
  }
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 11), MoeLayout::Fused, "model.layers.7.mlp.");
    tensor_named(t, ex + "w13_weight_bias") = HostTensor::zeros(DType::F32, {4, 100});
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "b.safetensors"), 7); }),
                HasSubstr("tensor '" + ex + "w13_weight_bias' (w13_bias) has shape [4, 100], expected [4, 192]"));
  }
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 12), MoeLayout::Fused, "model.layers.7.mlp.");
    tensor_named(t, ex + "w2_weight_scale") = HostTensor::zeros(DType::I32, {4, 64, 3});
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "c.safetensors"), 7); }),
                HasSubstr("tensor '" + ex + "w2_weight_scale' holds scales of dtype I32"));
  }
  {
    Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 13), MoeLayout::Fused, "model.layers.7.mlp.");
    tensor_named(t, ex + "w13_weight") = HostTensor::zeros(DType::U8, {4, 192, 20});  // H = 40: not a multiple of 32
    EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t, "d.safetensors"), 7); }),
                HasSubstr("E=4 H=40 I=96: need E > 0 and H, I positive multiples of 32"));
  }
}

TEST(LayoutLoad, AnExpertOtherThanTheFirstWithTheWrongShapeIsNamed) {
  TempDir dir;
  Tensors t = moe_layer_tensors(random_layer(MoeLayout::DeepSeekV4, 20), MoeLayout::DeepSeekV4, "layers.7.ffn.");
  tensor_named(t, "layers.7.ffn.experts.3.w2.scale") = HostTensor::zeros(DType::F8_E8M0, {64, 2});
  EXPECT_THAT(error_of([&] { load_moe_layer(save_and_open(dir, t), 7); }),
              HasSubstr("tensor 'layers.7.ffn.experts.3.w2.scale' (scales) has shape [64, 2], expected [64, 3]"));
}

TEST(LayoutLoad, InspectReportsALayerErrorWithNonZeroExit) {
  TempDir dir;
  Tensors t = moe_layer_tensors(random_layer(MoeLayout::GptOss, 21), MoeLayout::GptOss, "model.layers.7.mlp.");
  tensor_named(t, "model.layers.7.mlp.experts.gate_up_proj_scales").mutable_as<std::uint8_t>()[0] = 0xFF;
  save_safetensors(dir / "nan.safetensors", t);
  const CliResult r = run_cli("inspect " + (dir / "nan.safetensors") + " --layer 7", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_THAT(r.err, HasSubstr("tensor 'model.layers.7.mlp.experts.gate_up_proj_scales': scale at index [0, 0, 0] is the E8M0 NaN byte 0xFF"));
}

TEST(LayoutLoad, UnquantizedLayersPointToQuantize) {
  TempDir dir;
  Tensors t = {{"model.layers.1.mlp.experts.w13_weight", HostTensor::zeros(DType::BF16, {2, 64, 32})},
               {"model.layers.1.mlp.experts.w2_weight", HostTensor::zeros(DType::BF16, {2, 32, 32})}};
  const Checkpoint ckpt = save_and_open(dir, t);
  ASSERT_EQ(find_moe_layers(ckpt).size(), 1u);
  EXPECT_EQ(find_moe_layers(ckpt)[0].layout, MoeLayout::DenseFused);
  EXPECT_THAT(error_of([&] { load_moe_layer(ckpt, 1); }), HasSubstr("is dense-fused, not MXFP4: run `mxmoe quantize` first"));
}

TEST(LayoutDetect, ListsLayersInOrderAndNamesWhatIsMissingOrAmbiguous) {
  TempDir dir;
  Tensors t = moe_layer_tensors(random_layer(MoeLayout::Fused, 14, 2, 32, 32), MoeLayout::Fused, "model.layers.12.mlp.");
  for (auto& p : moe_layer_tensors(random_layer(MoeLayout::GptOss, 15, 2, 32, 32), MoeLayout::GptOss, "model.layers.3.mlp."))
    t.push_back(p);
  {
    const Checkpoint ckpt = save_and_open(dir, t, "a.safetensors");
    const auto layers = find_moe_layers(ckpt);
    ASSERT_EQ(layers.size(), 2u);
    EXPECT_EQ(layers[0].layer, 3);
    EXPECT_EQ(layers[0].layout, MoeLayout::GptOss);
    EXPECT_EQ(layers[1].layer, 12);
    EXPECT_THAT(error_of([&] { find_moe_layer(ckpt, 5); }), HasSubstr("has no MoE layer 5 (layers: 3, 12)"));
  }
  for (auto& p : moe_layer_tensors(random_layer(MoeLayout::Fused, 16, 2, 32, 32), MoeLayout::Fused, "mtp.model.layers.3.mlp."))
    t.push_back(p);
  const Checkpoint ckpt = save_and_open(dir, t, "b.safetensors");
  EXPECT_THAT(error_of([&] { find_moe_layer(ckpt, 3); }),
              AllOf(HasSubstr("layer 3 is ambiguous"), HasSubstr("'mtp.model.layers.3.mlp.experts.' (fused)")));
  EXPECT_THAT(error_of([&] { find_moe_layer(save_and_open(dir, {{"x", HostTensor::zeros(DType::U8, {2})}}, "c.safetensors"), 0); }),
              HasSubstr("holds no MoE layer in a known layout"));
}

TEST(LayoutWrite, LayoutsWithoutAPlaceForATensorRefuseIt) {
  EXPECT_THAT(error_of([&] { moe_layer_tensors(random_layer(MoeLayout::GptOss, 17), MoeLayout::Fused, "p.layers.0."); }),
              HasSubstr("layout fused has no router logit bias"));
  EXPECT_THAT(error_of([&] { moe_layer_tensors(random_layer(MoeLayout::Fused, 18), MoeLayout::GptOss, "p.layers.0."); }),
              HasSubstr("layout gpt-oss has no correction bias"));
  EXPECT_THAT(error_of([&] { moe_layer_tensors(random_layer(MoeLayout::Fused, 19), MoeLayout::DeepSeekV4, "p.layers.0."); }),
              HasSubstr("layout dsv4 has no expert biases"));
  EXPECT_THAT(error_of([&] { parse_mxfp4_layout("mixtral"); }), HasSubstr("unknown MXFP4 layout 'mixtral' (known: dsv4, fused, modelopt, gpt-oss)"));
}
