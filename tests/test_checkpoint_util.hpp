// Helpers of the checkpoint and layout tests: temp dirs, raw safetensors bytes, running the CLI
// and the Python helper.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"
#include "test_util.hpp"

namespace mxmoe::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mxmoe-ckpt-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A safetensors image: 8-byte length, `header` verbatim, then `data_bytes` bytes of a pattern.
inline std::vector<std::uint8_t> raw_safetensors(const std::string& header, std::size_t data_bytes, std::uint64_t header_len = 0) {
  std::vector<std::uint8_t> b(8 + header.size() + data_bytes);
  const std::uint64_t n = header_len ? header_len : header.size();
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  for (std::size_t i = 0; i < data_bytes; ++i) b[8 + header.size() + i] = static_cast<std::uint8_t>(i * 37 + 11);
  return b;
}

// The message of the mxmoe::Error `f` throws (fails the test when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const mxmoe::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an mxmoe::Error";
  return "";
}

// The shared runners of test_util.hpp; the TempDir argument only keeps these tests' call sites short.
using CliResult = test::CliRun;
inline CliResult run_command(const std::string& command, const TempDir&) { return test::run_command(command); }
inline CliResult run_cli(const std::string& args, const TempDir&) { return test::run_cli(args); }

inline bool have_python_safetensors() {
  static const bool ok = std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") == 0;
  return ok;
}

inline std::string py_helper() { return std::string("python3 ") + MXMOE_SOURCE_DIR + "/tests/py/st_files.py"; }

#define MXMOE_REQUIRE_PYTHON()                                                                          \
  if (!mxmoe::testing::have_python_safetensors())                                                       \
  GTEST_SKIP() << "python3 with safetensors and numpy not found (scripts/install-deps installs them)"

inline bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::equal(static_cast<const std::uint8_t*>(a.data()), static_cast<const std::uint8_t*>(a.data()) + a.nbytes(),
                    static_cast<const std::uint8_t*>(b.data()));
}

}  // namespace mxmoe::testing
