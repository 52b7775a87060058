// "No file changed": a snapshot of every entry under a folder (name, type, size, mtime, a hash of
// the bytes) taken before a command and compared after it. Also finds stray temporaries.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace mxmoe::testing {

struct FileState {
  std::uintmax_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t hash = 0;  // FNV-1a of the bytes (regular files)
  bool operator==(const FileState& o) const { return size == o.size && mtime_ns == o.mtime_ns && hash == o.hash; }
};

inline std::uint64_t fnv1a(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::uint64_t h = 1469598103934665603ull;
  char buf[1 << 14];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
    if (!in) break;
  }
  return h;
}

// Every entry under `dir` (relative path -> state; symlinks and folders recorded, not followed).
inline std::map<std::string, FileState> snapshot(const std::string& dir) {
  std::map<std::string, FileState> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    FileState s;
    s.size = S_ISREG(st.st_mode) ? static_cast<std::uintmax_t>(st.st_size) : 0;
    s.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (S_ISREG(st.st_mode)) s.hash = fnv1a(e.path().string());
    out[std::filesystem::relative(e.path(), dir).string()] = s;
  }
  return out;
}

// The differences between two snapshots, one line each ("" when none): for EXPECT_EQ(diff, "").
inline std::string snapshot_diff(const std::map<std::string, FileState>& before, const std::map<std::string, FileState>& after) {
  std::ostringstream d;
  for (const auto& [name, s] : before) {
    auto it = after.find(name);
    if (it == after.end()) d << "removed " << name << "\n";
    else if (!(it->second == s)) d << "changed " << name << "\n";
  }
  for (const auto& [name, s] : after)
    if (!before.count(name)) d << "added " << name << "\n";
  return d.str();
}

}  // namespace mxmoe::testing
