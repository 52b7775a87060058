#include "checkpoint/header.hpp"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "checkpoint/dtypes.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& label, const std::string& what) {
  fail(ErrorCode::Format, "safetensors file '" + label + "': " + what);
}
[[noreturn]] void bad_tensor(const std::string& label, const std::string& tensor, const std::string& what) {
  bad(label, "tensor '" + tensor + "': " + what);
}

// A JSON value for an error message: short, and safe whatever bytes its strings hold.
std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

std::uint64_t read_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A JSON value that must be a non-negative integer; `what` names it in the error.
std::uint64_t as_count(const json& v, const std::string& label, const std::string& tensor, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
  bad_tensor(label, tensor, what + " must be non-negative integers, found " + show(v));
}

std::map<std::string, std::string> parse_metadata(const json& m, const std::string& label) {
  if (!m.is_object()) bad(label, "__metadata__ must be an object of strings, found " + std::string(m.type_name()));
  std::map<std::string, std::string> out;
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it.value().is_string())
      bad(label, "__metadata__ entry '" + it.key() + "' must be a string, found " + std::string(it.value().type_name()));
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

TensorInfo parse_entry(const std::string& name, const json& e, const std::string& label, std::uint64_t data_size) {
  if (!e.is_object()) bad_tensor(label, name, "entry must be an object, found " + std::string(e.type_name()));
  TensorInfo t;
  t.name = name;
  t.file = label;
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) bad_tensor(label, name, "missing or non-string \"dtype\"");
  const SafetensorsDtype* spec = find_safetensors_dtype(dt->get<std::string>());
  if (!spec) bad_tensor(label, name, "unknown dtype '" + dt->get<std::string>() + "'");
  t.dtype_name = spec->name;
  t.dtype = spec->dtype;

  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) bad_tensor(label, name, "missing or non-array \"shape\"");
  // Element count with overflow checks: no real tensor comes near 2^62 bits.
  constexpr std::uint64_t kLimit = std::uint64_t{1} << 56;
  std::uint64_t numel = 1;
  bool zero = false;
  for (const auto& d : *sh) {
    std::uint64_t n = as_count(d, label, name, "shape dimensions");
    if (n == 0) zero = true;
    if (n > kLimit || (n > 0 && numel > kLimit / n)) bad_tensor(label, name, "shape " + show(*sh) + " is too large");
    t.shape.push_back(static_cast<std::int64_t>(n));
    if (!zero) numel *= n;
  }
  if (zero) numel = 0;
  const std::uint64_t bits = numel * static_cast<std::uint64_t>(spec->bits);
  if (bits % 8 != 0)
    bad_tensor(label, name, "shape " + show(*sh) + " of " + spec->name + " does not fill whole bytes (" + std::to_string(bits) + " bits)");

  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2) bad_tensor(label, name, "\"data_offsets\" must be an array [begin, end]");
  t.begin = as_count((*off)[0], label, name, "data_offsets");
  t.end = as_count((*off)[1], label, name, "data_offsets");
  if (t.begin > t.end)
    bad_tensor(label, name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] end before they begin");
  if (t.end > data_size)
    bad_tensor(label, name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                "] run past the end of the data section (" + std::to_string(data_size) + " bytes)");
  if (t.end - t.begin != bits / 8)
    bad_tensor(label, name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] hold " +
                                std::to_string(t.end - t.begin) + " bytes, but shape " + show(*sh) + " of " + spec->name +
                                " needs " + std::to_string(bits / 8));
  return t;
}

// Tensors must tile the data section exactly: no overlap, no hole, nothing after the last one.
void check_tiling(std::vector<TensorInfo>& tensors, const std::string& label, std::uint64_t data_size) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : tensors) {
    if (t.begin < pos)
      bad(label, "tensors '" + prev->name + "' [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) + "] and '" +
                     t.name + "' [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] overlap");
    if (t.begin > pos)
      bad(label, "hole of " + std::to_string(t.begin - pos) + " bytes before tensor '" + t.name + "' (data offsets must cover the data section)");
    pos = t.end;
    prev = &t;
  }
  if (pos != data_size)
    bad(label, std::to_string(data_size - pos) + " bytes after the last tensor are not covered by any tensor");
}

}  // namespace

ParsedHeader parse_header(const std::uint8_t* data, std::size_t size, const std::string& label) {
  if (size == 0) bad(label, "empty file");
  if (size < 8) bad(label, "file of " + std::to_string(size) + " bytes is too short for the 8-byte header length");
  const std::uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderBytes)
    bad(label, "header length " + std::to_string(n) + " exceeds the format's limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > size - 8)
    bad(label, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  if (n < 2 || data[8] != '{') bad(label, "header must be a JSON object starting with '{'");

  const char* begin = reinterpret_cast<const char*>(data + 8);
  json header = json::parse(begin, begin + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) bad(label, "header is not valid JSON");
  if (!header.is_object()) bad(label, "header must be a JSON object");

  ParsedHeader out;
  out.data_start = 8 + n;
  const std::uint64_t data_size = size - out.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") out.metadata = parse_metadata(it.value(), label);
    else out.tensors.push_back(parse_entry(it.key(), it.value(), label, data_size));
  }
  check_tiling(out.tensors, label, data_size);
  return out;
}

}  // namespace mxmoe::checkpoint

namespace mxmoe {

std::vector<TensorInfo> parse_safetensors_header(const std::uint8_t* data, std::size_t size, const std::string& label) {
  return checkpoint::parse_header(data, size, label).tensors;
}

}  // namespace mxmoe
