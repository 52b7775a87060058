// quantize: bf16/f32 experts under every naming to each MXFP4 layout; the result loads back equal to an
// independent float64 implementation of the OCP rule, other tensors are copied, layouts convert losslessly.
#include <cmath>

#include "core/random.hpp"
#include "formats/bf16.hpp"
#include "test_checkpoint_util.hpp"

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

using Tensors = std::vector<std::pair<std::string, HostTensor>>;

// OCP MXFP4 in float64: shared exponent floor(log2 amax) - 2, nearest E2M1 magnitude with ties to the
// even code, saturating at 6. Returns the code (sign in bit 3) and writes the scale byte.
std::uint8_t ocp_code(double x, int shared) {
  static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double a = std::fabs(std::ldexp(x, -shared));
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(a - mags[c]), db = std::fabs(a - mags[best]);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<std::uint8_t>(best | (std::signbit(x) ? 8 : 0));
}

// Quantizes rows x K (row-major doubles) into packed bytes and scale bytes.
void ocp_quantize(const std::vector<double>& x, std::int64_t rows, std::int64_t K, std::vector<std::uint8_t>& packed,
                  std::vector<std::uint8_t>& scales) {
  packed.assign(rows * K / 2, 0);
  scales.assign(rows * K / 32, 0);
  for (std::int64_t b = 0; b < rows * K / 32; ++b) {
    double amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const int shared = amax > 0 ? static_cast<int>(std::floor(std::log2(amax))) - 2 : 0;
    scales[b] = static_cast<std::uint8_t>(shared + 127);
    for (int i = 0; i < 32; ++i) {
      const std::int64_t k = b * 32 + i;
      packed[k / 2] |= static_cast<std::uint8_t>(ocp_code(x[k], shared) << (4 * (k % 2)));
    }
  }
}

// A bf16 [rows, cols] tensor of normal values (std 0.05, the occasional outlier) and its values.
HostTensor dense_bf16(SplitMix64& rng, std::int64_t rows, std::int64_t cols, std::vector<double>& values) {
  HostTensor t = HostTensor::zeros(DType::BF16, {rows, cols});
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    const double v = rng.normal() * (i % 97 == 0 ? 0.8 : 0.05);
    t.mutable_as<std::uint16_t>()[i] = formats::float_to_bf16(static_cast<float>(v));
    values.push_back(formats::bf16_to_float(t.as<std::uint16_t>()[i]));
  }
  return t;
}

struct DenseModel {
  Tensors tensors;
  std::vector<std::uint8_t> w13, s13, w2, s2;  // expected canonical bytes
  std::vector<float> router;
};

// E experts named prefix + "experts.e.{gate_proj,up_proj,down_proj}.weight" (or w1/w3/w2), bf16.
DenseModel dense_model(int E, int H, int I, bool proj_names, std::uint64_t seed) {
  SplitMix64 rng(seed);
  DenseModel m;
  std::vector<double> v13, v2;
  const std::string p = "model.layers.2.mlp.experts.";
  for (int e = 0; e < E; ++e) {
    const std::string ex = p + std::to_string(e) + ".";
    m.tensors.emplace_back(ex + (proj_names ? "gate_proj" : "w1") + ".weight", dense_bf16(rng, I, H, v13));
    m.tensors.emplace_back(ex + (proj_names ? "up_proj" : "w3") + ".weight", dense_bf16(rng, I, H, v13));
    m.tensors.emplace_back(ex + (proj_names ? "down_proj" : "w2") + ".weight", dense_bf16(rng, H, I, v2));
  }
  std::vector<double> router_values;
  m.tensors.emplace_back("model.layers.2.mlp.gate.weight", dense_bf16(rng, E, H, router_values));
  for (double r : router_values) m.router.push_back(static_cast<float>(r));
  std::vector<double> norm;
  m.tensors.emplace_back("model.norm.weight", dense_bf16(rng, 1, H, norm));
  ocp_quantize(v13, static_cast<std::int64_t>(E) * 2 * I, H, m.w13, m.s13);  // gate rows then up rows per expert
  ocp_quantize(v2, static_cast<std::int64_t>(E) * H, I, m.w2, m.s2);
  return m;
}

bool equals(const HostTensor& t, const std::vector<std::uint8_t>& bytes) {
  return t.nbytes() == bytes.size() && std::equal(bytes.begin(), bytes.end(), static_cast<const std::uint8_t*>(t.data()));
}

}  // namespace

TEST(Quantize, DenseExpertsToEveryLayoutMatchFloat64OcpExactly) {
  for (bool proj : {true, false}) {
    const DenseModel m = dense_model(3, 96, 64, proj, proj ? 5 : 6);
    for (const char* name : {"dsv4", "fused", "gpt-oss"}) {
      SCOPED_TRACE(std::string(name) + (proj ? " from gate_proj/up_proj/down_proj" : " from w1/w3/w2"));
      TempDir dir;
      save_safetensors(dir / "dense.safetensors", m.tensors);
      const MoeLayout layout = parse_mxfp4_layout(name);
      std::vector<std::uint64_t> seen;
      const QuantizeSummary s = quantize_checkpoint(Checkpoint::open(dir / "dense.safetensors"), dir / "q.safetensors", layout,
                                                    [&](std::uint64_t done, std::uint64_t total) {
                                                      if (!seen.empty()) {
                                                        EXPECT_GE(done, seen.back());
                                                      }
                                                      EXPECT_LE(done, total);
                                                      seen.push_back(done);
                                                    });
      EXPECT_EQ(s.layers_quantized, 1);
      EXPECT_EQ(s.tensors_copied, 1);
      ASSERT_FALSE(seen.empty());
      EXPECT_EQ(seen.back(), s.bytes_written);

      const Checkpoint q = Checkpoint::open(dir / "q.safetensors");
      const LoadedMoeLayer l = load_moe_layer(q, 2);
      EXPECT_EQ(l.ref.layout, layout);
      EXPECT_TRUE(equals(l.weights.w13, m.w13));
      EXPECT_TRUE(equals(l.weights.w13_scale, m.s13));
      EXPECT_TRUE(equals(l.weights.w2, m.w2));
      EXPECT_TRUE(equals(l.weights.w2_scale, m.s2));
      ASSERT_TRUE(l.weights.router_weight.has_value());
      EXPECT_TRUE(std::equal(m.router.begin(), m.router.end(), l.weights.router_weight->as<float>()));
      EXPECT_TRUE(same_bytes(q.view("model.norm.weight"), m.tensors.back().second));  // copied as it was
    }
  }
}

TEST(Quantize, FusedDenseF32AndLayoutConversionIsLossless) {
  TempDir dir;
  SplitMix64 rng(9);
  const int E = 2, H = 64, I = 32;
  HostTensor w13 = HostTensor::zeros(DType::F32, {E, 2 * I, H}), w2 = HostTensor::zeros(DType::F32, {E, H, I});
  std::vector<double> v13, v2;
  for (std::int64_t i = 0; i < w13.numel(); ++i) v13.push_back(w13.mutable_as<float>()[i] = static_cast<float>(rng.normal() * 0.1));
  for (std::int64_t i = 0; i < w2.numel(); ++i) v2.push_back(w2.mutable_as<float>()[i] = static_cast<float>(rng.normal() * 0.1));
  save_safetensors(dir / "dense.safetensors", {{"model.layers.0.mlp.experts.w13_weight", w13}, {"model.layers.0.mlp.experts.w2_weight", w2}});
  std::vector<std::uint8_t> p13, s13, p2, s2;
  ocp_quantize(v13, E * 2 * I, H, p13, s13);
  ocp_quantize(v2, E * H, I, p2, s2);

  quantize_checkpoint(Checkpoint::open(dir / "dense.safetensors"), dir / "fused.safetensors", MoeLayout::Fused);
  // MXFP4 input: the layer is converted, fused -> gpt-oss -> dsv4, without changing a bit.
  const QuantizeSummary s = quantize_checkpoint(Checkpoint::open(dir / "fused.safetensors"), dir / "gpt.safetensors", MoeLayout::GptOss);
  EXPECT_EQ(s.layers_converted, 1);
  quantize_checkpoint(Checkpoint::open(dir / "gpt.safetensors"), dir / "dsv4.safetensors", MoeLayout::DeepSeekV4);
  for (const char* f : {"fused.safetensors", "gpt.safetensors", "dsv4.safetensors"}) {
    SCOPED_TRACE(f);
    const LoadedMoeLayer l = load_moe_layer(Checkpoint::open(dir / f), 0);
    EXPECT_TRUE(equals(l.weights.w13, p13));
    EXPECT_TRUE(equals(l.weights.w13_scale, s13));
    EXPECT_TRUE(equals(l.weights.w2, p2));
    EXPECT_TRUE(equals(l.weights.w2_scale, s2));
  }
}

TEST(Quantize, NonFiniteInputsAreRefusedByNameAndIndex) {
  TempDir dir;
  DenseModel m = dense_model(2, 32, 32, true, 11);
  m.tensors[4].second.mutable_as<std::uint16_t>()[1 * 32 + 7] = 0x7f80;  // +inf at [1, 7] of expert 1's up_proj
  save_safetensors(dir / "dense.safetensors", m.tensors);
  EXPECT_THAT(error_of([&] { quantize_checkpoint(Checkpoint::open(dir / "dense.safetensors"), dir / "q.safetensors", MoeLayout::Fused); }),
              HasSubstr("tensor 'model.layers.2.mlp.experts.1.up_proj.weight': value at index [1, 7] is not finite"));
  EXPECT_FALSE(std::filesystem::exists(dir / "q.safetensors"));
}

TEST(Quantize, CliWritesTheChosenLayoutAndInspectSeesIt) {
  TempDir dir;
  save_safetensors(dir / "dense.safetensors", dense_model(2, 64, 32, false, 12).tensors);
  const CliResult q = run_cli("quantize " + (dir / "dense.safetensors") + " " + (dir / "q.safetensors") + " --layout gpt-oss", dir);
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.out, HasSubstr("1 layer(s) quantized"));
  const CliResult i = run_cli("inspect " + (dir / "q.safetensors"), dir);
  EXPECT_EQ(i.rc, 0) << i.err;
  EXPECT_THAT(i.out, AllOf(HasSubstr("layer 2: gpt-oss"), HasSubstr("E=2 H=64 I=32"), HasSubstr("gate_up_proj_blocks")));
  const CliResult bad = run_cli("quantize " + (dir / "dense.safetensors") + " " + (dir / "x.safetensors") + " --layout nvfp4", dir);
  EXPECT_EQ(bad.rc, 2);
  EXPECT_THAT(bad.err, HasSubstr("unknown MXFP4 layout 'nvfp4'"));
}
