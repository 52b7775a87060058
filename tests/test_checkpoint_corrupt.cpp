// The catalogue of malformed safetensors files and indexes: each is refused with an error that names
// the file, the tensor (where there is one) and what is wrong; none crashes or reads past the map.
#include <nlohmann/json.hpp>

#include "test_checkpoint_util.hpp"

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace mxmoe;
using namespace mxmoe::testing;

namespace {

struct Corrupt {
  const char* what;
  std::vector<std::uint8_t> bytes;
  std::vector<std::string> expected;  // substrings of the message, besides the file name
};

std::vector<Corrupt> catalogue() {
  const std::string good = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})";
  auto truncated = raw_safetensors(good, 12);
  truncated.resize(truncated.size() - 2);
  return {
      {"empty file", {}, {"empty file"}},
      {"shorter than the length field", {1, 0, 0}, {"3 bytes is too short for the 8-byte header length"}},
      {"truncated data section", truncated, {"tensor 'b'", "[8, 12] run past the end of the data section (10 bytes)"}},
      {"huge header length", raw_safetensors(good, 12, std::uint64_t{1} << 40), {"header length 1099511627776 exceeds the format's limit"}},
      {"header length past the file", raw_safetensors(good, 12, 5000), {"header length 5000 runs past the end of the file"}},
      {"offsets past the end",
       raw_safetensors(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})", 8),
       {"tensor 'a'", "[4, 12] run past the end of the data section (8 bytes)"}},
      {"overlapping tensors",
       raw_safetensors(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})", 12),
       {"tensors 'a' [0, 8] and 'b' [4, 12] overlap"}},
      {"hole between tensors",
       raw_safetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})", 12),
       {"hole of 4 bytes before tensor 'b'"}},
      {"bytes after the last tensor", raw_safetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 9),
       {"5 bytes after the last tensor"}},
      {"shape inconsistent with the byte range",
       raw_safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "hold 8 bytes, but shape [3] of F32 needs 12"}},
      {"unknown dtype", raw_safetensors(R"({"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,4]}})", 4), {"tensor 'a'", "unknown dtype 'Q7'"}},
      {"F4 with an odd element count", raw_safetensors(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
       {"tensor 'a'", "does not fill whole bytes (12 bits)"}},
      {"invalid JSON", raw_safetensors(R"({"a":{"dtype":"U8",)", 0), {"header is not valid JSON"}},
      {"header not an object", raw_safetensors("[1, 2]", 0), {"header must be a JSON object starting with '{'"}},
      {"negative dimension", raw_safetensors(R"({"a":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", 4),
       {"tensor 'a'", "shape dimensions must be non-negative integers, found -4"}},
      {"offsets reversed", raw_safetensors(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4),
       {"tensor 'a'", "data_offsets [4, 0] end before they begin"}},
      {"offsets not a pair", raw_safetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", 4),
       {"tensor 'a'", "\"data_offsets\" must be an array [begin, end]"}},
      {"dtype missing", raw_safetensors(R"({"a":{"shape":[4],"data_offsets":[0,4]}})", 4), {"tensor 'a'", "missing or non-string \"dtype\""}},
      {"shape overflowing", raw_safetensors(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
       {"tensor 'a'", "is too large"}},
      {"metadata not strings", raw_safetensors(R"({"__metadata__":{"k":1}})", 0), {"__metadata__ entry 'k' must be a string"}},
  };
}

}  // namespace

TEST(CorruptSafetensors, EveryFileOfTheCatalogueIsRefusedByName) {
  TempDir dir;
  int n = 0;
  for (const auto& c : catalogue()) {
    SCOPED_TRACE(c.what);
    const std::string path = dir / ("bad" + std::to_string(n++) + ".safetensors");
    write_file(path, c.bytes);
    const std::string msg = error_of([&] { Checkpoint::open(path); });
    EXPECT_THAT(msg, HasSubstr("safetensors file '" + path + "'"));
    for (const auto& e : c.expected) EXPECT_THAT(msg, HasSubstr(e));
    // The same bytes from memory and through the public header parser: the same refusal.
    EXPECT_THAT(error_of([&] { parse_safetensors_header(c.bytes.data(), c.bytes.size(), "mem"); }), HasSubstr(c.expected.front()));
  }
}

TEST(CorruptSafetensors, InspectExitsNonZeroWithTheNamedError) {
  TempDir dir;
  write_file(dir / "bad.safetensors", raw_safetensors(R"({"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,4]}})", 4));
  const CliResult r = run_cli("inspect " + (dir / "bad.safetensors"), dir);
  EXPECT_NE(r.rc, 0);
  EXPECT_THAT(r.err, AllOf(HasSubstr("bad.safetensors"), HasSubstr("tensor 'a'"), HasSubstr("unknown dtype 'Q7'")));
}

class CorruptIndex : public ::testing::Test {
 protected:
  void SetUp() override {
    save_safetensors(dir_ / "shard.safetensors", {{"x", HostTensor::zeros(DType::U8, {4})}});
  }
  std::string write_index(const std::string& text) {
    std::ofstream(dir_ / "model.safetensors.index.json") << text;
    return dir_ / "model.safetensors.index.json";
  }
  TempDir dir_;
};

TEST_F(CorruptIndex, InvalidJson) {
  EXPECT_THAT(error_of([&] { Checkpoint::open(write_index("{\"weight_map\": ")); }), HasSubstr("index.json' is not valid JSON"));
}

TEST_F(CorruptIndex, NoWeightMap) {
  EXPECT_THAT(error_of([&] { Checkpoint::open(write_index("{\"metadata\": {}}")); }), HasSubstr("has no \"weight_map\" object"));
}

TEST_F(CorruptIndex, ShardFileMissing) {
  EXPECT_THAT(error_of([&] { Checkpoint::open(write_index(R"({"weight_map":{"x":"other.safetensors"}})")); }),
              HasSubstr("cannot open '" + (dir_ / "other.safetensors") + "'"));
}

TEST_F(CorruptIndex, TensorNotInItsShard) {
  EXPECT_THAT(error_of([&] { Checkpoint::open(write_index(R"({"weight_map":{"x":"shard.safetensors","y":"shard.safetensors"}})")); }),
              HasSubstr("puts tensor 'y' in 'shard.safetensors', which does not hold it"));
}

TEST_F(CorruptIndex, PathOutsideTheDirectory) {
  EXPECT_THAT(error_of([&] { Checkpoint::open(write_index(R"({"weight_map":{"x":"../shard.safetensors"}})")); }),
              HasSubstr("tensor 'x' names file '../shard.safetensors', which is not a path inside the index's directory"));
}

TEST_F(CorruptIndex, SameTensorInTwoShards) {
  save_safetensors(dir_ / "shard2.safetensors", {{"x", HostTensor::zeros(DType::U8, {4})}});
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir_.path()); }), HasSubstr("tensor 'x' is in both"));
}
