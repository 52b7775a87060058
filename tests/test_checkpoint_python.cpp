// Interoperability with Python's safetensors package: files it writes in each layout (every weight and
// scale dtype, sharded or not) load to the canonical tensors numpy computed; files we write read back
// in Python byte for byte.
#include <nlohmann/json.hpp>

#include "test_checkpoint_util.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

struct PyCase {
  std::string layout, scales, weights;
  int shards;
};
void PrintTo(const PyCase& c, std::ostream* os) { *os << c.layout << " scales " << c.scales << " weights " << c.weights << " shards " << c.shards; }

std::string hex(const HostTensor& t) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  const auto* p = static_cast<const std::uint8_t*>(t.data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

void expect_matches_numpy(const LoadedMoeLayer& got, const Checkpoint& expected) {
  const auto& w = got.weights;
  const std::pair<const char*, const HostTensor*> required[] = {
      {"w13", &w.w13}, {"w13_scale", &w.w13_scale}, {"w2", &w.w2}, {"w2_scale", &w.w2_scale}};
  for (const auto& [name, t] : required) EXPECT_TRUE(same_bytes(*t, expected.view(name))) << name;
  const std::pair<const char*, const std::optional<HostTensor>*> optional[] = {
      {"w13_bias", &w.w13_bias},
      {"w2_bias", &w.w2_bias},
      {"router_weight", &w.router_weight},
      {"correction_bias", &w.correction_bias},
      {"router_logit_bias", &got.router_logit_bias}};
  for (const auto& [name, t] : optional) {
    ASSERT_EQ(t->has_value(), expected.contains(name)) << name;
    if (*t) {
      EXPECT_TRUE(same_bytes(**t, expected.view(name))) << name;
    }
  }
}

class PythonWritten : public ::testing::TestWithParam<PyCase> {};

}  // namespace

TEST_P(PythonWritten, LoadsToTheCanonicalTensorsNumpyComputed) {
  MXMOE_REQUIRE_PYTHON();
  const PyCase c = GetParam();
  TempDir dir;
  const std::string out = dir / "model";
  const CliResult py = run_command(py_helper() + " write " + c.layout + " " + out + " --E 3 --H 96 --I 64 --biases --router --seed 7" +
                                       " --scales " + c.scales + " --weights " + c.weights + " --shards " + std::to_string(c.shards),
                                   dir);
  ASSERT_EQ(py.rc, 0) << py.err;
  const Checkpoint ckpt = Checkpoint::open(out);
  const Checkpoint expected = Checkpoint::open(out + "-expected.safetensors");
  const LoadedMoeLayer got = load_moe_layer(ckpt, 3);
  EXPECT_EQ(moe_layout_name(got.ref.layout), c.layout);
  EXPECT_EQ(got.weights.num_experts, 3);
  EXPECT_EQ(got.weights.hidden, 96);
  EXPECT_EQ(got.weights.inter, 64);
  expect_matches_numpy(got, expected);
  const bool float_scales = c.scales == "f32" || c.scales == "bf16";
  EXPECT_EQ(got.scale_format.find("converted") != std::string::npos, float_scales) << got.scale_format;
  // inspect reports the same layout, with exit code 0.
  const CliResult r = run_cli("inspect " + out + " --layer 3", dir);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("layout " + c.layout));
}

INSTANTIATE_TEST_SUITE_P(LayoutsScalesDtypes, PythonWritten,
                         ::testing::Values(PyCase{"fused", "e8m0", "u8", 1}, PyCase{"fused", "f32", "i8", 1}, PyCase{"fused", "u8", "f4", 3},
                                           PyCase{"dsv4", "e8m0", "f4", 1}, PyCase{"dsv4", "f32", "u8", 2}, PyCase{"dsv4", "bf16", "i8", 1},
                                           PyCase{"gpt-oss", "u8", "u8", 1}, PyCase{"gpt-oss", "f32", "u8", 2}),
                         [](const auto& info) {
                           std::string s = info.param.layout + "_" + info.param.scales + "_" + info.param.weights + "_" +
                                           std::to_string(info.param.shards) + "shard";
                           for (auto& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(PythonWritten, SecondAliasNamesLoad) {
  MXMOE_REQUIRE_PYTHON();
  TempDir dir;
  const std::string out = dir / "model";
  ASSERT_EQ(run_command(py_helper() + " write fused " + out + " --biases --alias-variant 1 --prefix x.layers.0.moe.", dir).rc, 0);
  const LoadedMoeLayer got = load_moe_layer(Checkpoint::open(out), 0);
  expect_matches_numpy(got, Checkpoint::open(out + "-expected.safetensors"));
  bool saw_inv = false;
  for (const auto& m : got.matches) saw_inv |= m.alias == "w13_weight_scale_inv";
  EXPECT_TRUE(saw_inv);
}

TEST(PythonReads, OurWriterOutputByteForByte) {
  MXMOE_REQUIRE_PYTHON();
  TempDir dir;
  SyntheticSpec spec;
  spec.num_experts = 3;
  spec.hidden = 64;
  spec.inter = 32;
  spec.with_biases = true;
  LoadedMoeLayer layer;
  layer.weights = make_synthetic_weights(spec);
  for (MoeLayout layout : {MoeLayout::Fused, MoeLayout::DeepSeekV4}) {
    SCOPED_TRACE(moe_layout_name(layout));
    if (layout == MoeLayout::DeepSeekV4) layer.weights.w13_bias.reset(), layer.weights.w2_bias.reset();
    const auto tensors = moe_layer_tensors(layer, layout, "model.layers.0.mlp.");
    save_safetensors(dir / "ours.safetensors", tensors, {{"format", "pt"}});
    const CliResult r = run_command(py_helper() + " dump " + (dir / "ours.safetensors"), dir);
    ASSERT_EQ(r.rc, 0) << r.err;
    const nlohmann::json j = nlohmann::json::parse(r.out);
    ASSERT_EQ(j.size(), tensors.size());
    for (const auto& [name, t] : tensors) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(j.contains(name));
      EXPECT_EQ(j[name]["shape"].get<Shape>(), t.shape());
      EXPECT_EQ(j[name]["hex"].get<std::string>(), hex(t));
    }
    const std::string w1 = layout == MoeLayout::Fused ? "model.layers.0.mlp.experts.w13_weight" : "model.layers.0.mlp.experts.0.w1.weight";
    EXPECT_EQ(j[w1]["dtype"], layout == MoeLayout::Fused ? "U8" : "I8");  // dsv4: I8 pairs, as DeepSeek V4 ships them
  }
}
