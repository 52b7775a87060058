#include "checkpoint/index.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/regular_file.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> parse_index(const std::string& text, const std::string& label) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) fail(ErrorCode::Format, "index '" + label + "' is not valid JSON");
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail(ErrorCode::Format, "index '" + label + "' has no \"weight_map\" object");
  std::vector<std::pair<std::string, std::string>> entries;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      fail(ErrorCode::Format, "index '" + label + "': weight_map entry '" + it.key() + "' must name a file");
    const std::string file = it.value().get<std::string>();
    const fs::path p(file);
    if (file.empty() || p.is_absolute() || std::any_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; }))
      fail(ErrorCode::Format, "index '" + label + "': tensor '" + it.key() + "' names file '" + file +
                                  "', which is not a path inside the index's directory");
    entries.emplace_back(it.key(), file);
  }
  return entries;
}

std::vector<std::pair<std::string, std::string>> read_index(const std::string& path) {
  constexpr std::uint64_t kMaxIndexBytes = 256ull << 20;  // indexes of the largest models are a few MB
  return parse_index(read_regular_text(path, "index", kMaxIndexBytes), path);
}

}  // namespace mxmoe::checkpoint
