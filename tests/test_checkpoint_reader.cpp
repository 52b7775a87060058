// The safetensors reader and writer: every dtype, zero-copy views, sharded indexes and directories.
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/random.hpp"
#include "test_checkpoint_util.hpp"

using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

HostTensor random_tensor(DType dtype, Shape shape, std::uint64_t seed) {
  HostTensor t = HostTensor::zeros(dtype, std::move(shape));
  SplitMix64 rng(seed);
  auto* p = static_cast<std::uint8_t*>(t.mutable_data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<std::uint8_t>(rng.next());
  return t;
}

std::vector<std::pair<std::string, HostTensor>> every_dtype() {
  return {
      {"a.bf16", random_tensor(DType::BF16, {3, 5}, 1)},   {"b.f16", random_tensor(DType::F16, {7}, 2)},
      {"c.f32", random_tensor(DType::F32, {2, 3, 4}, 3)},  {"d.u8", random_tensor(DType::U8, {9}, 4)},
      {"e.i8", random_tensor(DType::I8, {1, 3}, 5)},       {"f.e8m0", random_tensor(DType::F8_E8M0, {4, 2}, 6)},
      {"g.e4m3", random_tensor(DType::F8_E4M3, {5}, 7)},   {"h.f4", random_tensor(DType::F4_E2M1, {3, 64}, 8)},
      {"i.empty", HostTensor::zeros(DType::F32, {0, 4})},
  };
}

}  // namespace

TEST(SafetensorsWriter, RoundTripsEveryDtypeThroughTheReader) {
  TempDir dir;
  const auto tensors = every_dtype();
  save_safetensors(dir / "all.safetensors", tensors, {{"format", "pt"}});
  const Checkpoint ckpt = Checkpoint::open(dir / "all.safetensors");
  EXPECT_EQ(ckpt.tensor_names().size(), tensors.size());
  EXPECT_EQ(ckpt.metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    const HostTensor v = ckpt.view(name);
    EXPECT_TRUE(same_bytes(v, t));
  }
  // F4 counts elements: 3 x 64 four-bit values in 96 bytes.
  EXPECT_EQ(ckpt.info("h.f4").dtype_name, "F4");
  EXPECT_EQ(ckpt.info("h.f4").end - ckpt.info("h.f4").begin, 96u);
}

TEST(SafetensorsWriter, HeaderIsPaddedAndDataSectionTiled) {
  TempDir dir;
  save_safetensors(dir / "x.safetensors", {{"x", random_tensor(DType::U8, {3}, 9)}});
  const std::string bytes = read_text(dir / "x.safetensors");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 3);
}

TEST(SafetensorsWriter, ViewsKeepTheMappingAliveAfterTheCheckpointIsGone) {
  TempDir dir;
  const HostTensor t = random_tensor(DType::U8, {4096}, 10);
  save_safetensors(dir / "x.safetensors", {{"x", t}});
  HostTensor v;
  {
    const Checkpoint ckpt = Checkpoint::open(dir / "x.safetensors");
    v = ckpt.view("x");
  }
  EXPECT_TRUE(same_bytes(v, t));
  EXPECT_THAT(error_of([&] { v.mutable_data(); }), HasSubstr("read-only"));
}

TEST(SafetensorsWriter, RefusesBadEntriesAndWrongByteCounts) {
  TempDir dir;
  EXPECT_THAT(error_of([&] {
                SafetensorsWriter w(dir / "a.safetensors", {{"x", DType::U8, {2}}, {"x", DType::U8, {2}}});
              }),
              HasSubstr("tensor 'x' declared twice"));
  EXPECT_THAT(error_of([&] { SafetensorsWriter w(dir / "a.safetensors", {{"odd", DType::F4_E2M1, {3}}}); }),
              HasSubstr("F4 tensor 'odd' of shape [3] does not fill whole bytes"));
  EXPECT_THAT(error_of([&] {
                SafetensorsWriter w(dir / "a.safetensors", {{"x", DType::F32, {2}}});
                const float v[3] = {1, 2, 3};
                w.append(v, sizeof v);
              }),
              HasSubstr("12 bytes appended, but only 8 remain"));
  EXPECT_THAT(error_of([&] {
                SafetensorsWriter w(dir / "a.safetensors", {{"x", DType::F32, {2}}});
                w.finish();
              }),
              HasSubstr("0 of 8 declared bytes written"));
  EXPECT_FALSE(std::filesystem::exists(dir / "a.safetensors"));  // nothing half-written appears
}

TEST(Checkpoint, ViewAsReinterpretsOnlySameByteCounts) {
  TempDir dir;
  save_safetensors(dir / "x.safetensors", {{"w", random_tensor(DType::F4_E2M1, {2, 64}, 11)}});
  const Checkpoint ckpt = Checkpoint::open(dir / "x.safetensors");
  const HostTensor bytes = ckpt.view_as("w", DType::U8, {2, 32});
  EXPECT_EQ(bytes.data(), ckpt.view("w").data());  // zero-copy
  EXPECT_THAT(error_of([&] { ckpt.view_as("w", DType::U8, {2, 64}); }),
              HasSubstr("tensor 'w' holds 64 bytes; cannot view it as U8 [2, 64] (128 bytes)"));
  EXPECT_THAT(error_of([&] { ckpt.info("nope"); }), HasSubstr("has no tensor 'nope'"));
}

TEST(Checkpoint, SpecDtypesMxmoeDoesNotComputeWithAreListedButNotViewed) {
  TempDir dir;
  write_file(dir / "b.safetensors",
             raw_safetensors(R"({"flags":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]},"h":{"dtype":"U16","shape":[2],"data_offsets":[4,8]}})", 8));
  const Checkpoint ckpt = Checkpoint::open(dir / "b.safetensors");
  EXPECT_EQ(ckpt.info("h").dtype_name, "U16");
  EXPECT_THAT(error_of([&] { ckpt.view("flags"); }), HasSubstr("has dtype BOOL, which mxmoe does not read"));
}

TEST(Checkpoint, ShardedIndexAndDirectory) {
  TempDir dir;
  const auto tensors = every_dtype();
  std::vector<std::pair<std::string, HostTensor>> a(tensors.begin(), tensors.begin() + 4), b(tensors.begin() + 4, tensors.end());
  save_safetensors(dir / "model-00001-of-00002.safetensors", a);
  save_safetensors(dir / "model-00002-of-00002.safetensors", b);
  nlohmann::json index;
  for (const auto& [n, t] : a) index["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (const auto& [n, t] : b) index["weight_map"][n] = "model-00002-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();

  for (const std::string& path : {dir / "model.safetensors.index.json", dir.path()}) {
    SCOPED_TRACE(path);
    const Checkpoint ckpt = Checkpoint::open(path);
    EXPECT_EQ(ckpt.files().size(), 2u);
    for (const auto& [name, t] : tensors) EXPECT_TRUE(same_bytes(ckpt.view(name), t)) << name;
  }
  // A directory without an index: every .safetensors file in it.
  std::filesystem::remove(dir / "model.safetensors.index.json");
  EXPECT_EQ(Checkpoint::open(dir.path()).tensor_names().size(), tensors.size());
}

TEST(Checkpoint, FromMemoryValidatesLikeAFile) {
  const auto bytes = raw_safetensors(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2);
  const Checkpoint ckpt = Checkpoint::from_memory("mem", bytes);
  EXPECT_EQ(ckpt.view("x").as<std::uint8_t>()[1], bytes[bytes.size() - 1]);
  EXPECT_THAT(error_of([&] { Checkpoint::from_memory("mem", {}); }), HasSubstr("safetensors file 'mem': empty file"));
}

TEST(Checkpoint, MissingPathsAreNamed) {
  TempDir dir;
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir / "absent.safetensors"); }), HasSubstr("absent.safetensors' does not exist"));
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }), HasSubstr("holds no .safetensors file"));
}
