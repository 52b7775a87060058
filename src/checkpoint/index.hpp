// Reading model.safetensors.index.json: the weight_map of a sharded model, as (tensor, shard file)
// pairs, checked for structure before any shard is opened.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mxmoe::checkpoint {

// Parses the text of an index (`label` names it in errors). Each weight_map value must be a relative
// path inside the index's directory (no absolute path, no ".."). mxmoe::Error (Format) otherwise.
std::vector<std::pair<std::string, std::string>> parse_index(const std::string& text, const std::string& label);

// Reads and parses the index file at `path` (Io error naming it when it cannot be read).
std::vector<std::pair<std::string, std::string>> read_index(const std::string& path);

}  // namespace mxmoe::checkpoint
