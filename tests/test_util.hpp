// The test-only half of the verification toolkit (the other half, the metric and the random inputs,
// is the library's mxmoe/verify.hpp; the device buffer is mxmoe/device_buffer.hpp): the one way a
// test expects an error, runs the CLI, and skips without a Hopper GPU; the float64 models of the element
// formats the tests check the codecs and the oracle against; synthetic weights and the float64 activation.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "mxmoe/config.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"

namespace mxmoe::test {

// The call throws mxmoe::Error whose message contains `substring` (and, in the second form, whose
// code is `code`).
inline void expect_error(const std::function<void()>& fn, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown, expected one mentioning '" << substring << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << "message: " << e.what();
  }
}
inline void expect_error(const std::function<void()>& fn, ErrorCode code, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown, expected one mentioning '" << substring << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << "message: " << e.what();
  }
}

// ---- float64 models of the element formats, from their definitions (independent of src/formats)

// E2M1 nibble (sign bit 3) -> value.
inline double e2m1_value(unsigned nibble) {
  static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return (nibble & 8u) ? -mag[nibble & 7u] : mag[nibble & 7u];
}
// E4M3 (E4M3FN) byte -> value; NaN for 0x7F and 0xFF. UE4M3 (NVFP4's scales) is its bytes 0..0x7E.
inline double e4m3_value(int b) {
  const int exp = (b >> 3) & 15, man = b & 7;
  if (exp == 15 && man == 7) return NAN;
  const double mag = exp == 0 ? std::ldexp(man / 8.0, -6) : std::ldexp(1.0 + man / 8.0, exp - 7);
  return (b & 0x80) ? -mag : mag;
}
// The nearest E4M3 byte by search over the magnitudes 0x00..0x7E: ties to the even mantissa (the even
// byte), |x| beyond 448 saturating; the sign of x kept (-0 included).
inline int e4m3_nearest(double x) {
  const double a = std::fabs(x);
  int best = 0;
  for (int b = 1; b <= 0x7E; ++b) {
    const double d = std::fabs(e4m3_value(b) - a), db = std::fabs(e4m3_value(best) - a);
    if (d < db || (d == db && b % 2 == 0)) best = b;
  }
  return std::signbit(x) ? best | 0x80 : best;
}

// The expert MLP's activation of (gate, up) in float64, written from the definitions in
// mxmoe/config.hpp (not through the library's own), for the tests' independent float64 models.
inline double act_f64(double g, double u, const ActivationConfig& a) {
  if (a.kind != ActivationKind::SiluMul) {
    g = std::min(g, static_cast<double>(a.limit));
    u = std::min(std::max(u, -static_cast<double>(a.limit)), static_cast<double>(a.limit));
  }
  if (a.kind == ActivationKind::GptOssSwiglu) return (u + 1.0) * g / (1.0 + std::exp(-static_cast<double>(a.alpha) * g));
  return g / (1.0 + std::exp(-g)) * u;
}

// Synthetic MXFP4 weights of E experts (H, I) from `seed`, values of std `std`: the one spec the
// oracle tests share.
inline CanonicalMoeWeights synthetic_weights(int E, int H, int I, bool biases, std::uint64_t seed, float std = 0.02f) {
  SyntheticSpec s;
  s.num_experts = E;
  s.hidden = H;
  s.inter = I;
  s.with_biases = biases;
  s.seed = seed;
  s.weight_std = std;
  return make_synthetic_weights(s);
}

// The message of the mxmoe::Error the call throws, or "no error": for tests that match several parts.
inline std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// A command run to completion through the shell.
struct CliRun {
  int rc = -1;           // exit status; -1 when it did not exit normally
  std::string out, err;  // what it wrote to stdout and to stderr
  std::string output() const { return out + err; }
};

inline CliRun run_command(const std::string& command) {
  // stdout and stderr to two fresh temporary files, read back and removed.
  auto temp = [] {
    char path[] = "/tmp/mxmoe-test-XXXXXX";
    const int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    return std::string(path);
  };
  auto slurp = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    std::remove(path.c_str());
    return s.str();
  };
  const std::string out = temp(), err = temp();
  const int status = std::system((command + " >" + out + " 2>" + err).c_str());
  CliRun r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

#ifdef MXMOE_CLI
// The `mxmoe` executable of this build with `args`.
inline CliRun run_cli(const std::string& args) { return run_command(std::string("'") + MXMOE_CLI + "' " + args); }

// Runs `mxmoe ARGS` and checks that it refuses them as a usage or input error: exit 2, and
// `message` on stderr.
inline void expect_cli_refuses(const std::string& args, const std::string& message) {
  const CliRun r = run_cli(args);
  EXPECT_EQ(r.rc, 2) << args << "\n" << r.out << r.err;
  EXPECT_NE(r.err.find(message), std::string::npos) << args << ": stderr lacks '" << message << "':\n" << r.err;
}
#endif

}  // namespace mxmoe::test

// First statement of a GPU test: skips it, saying why, unless device 0 is a Hopper GPU.
#define MXMOE_REQUIRE_HOPPER()                                                            \
  do {                                                                                    \
    const ::mxmoe::DeviceCheck mxmoe_device_check = ::mxmoe::check_hopper_device(0);      \
    if (!mxmoe_device_check.ok) GTEST_SKIP() << "GPU test skipped: " << mxmoe_device_check.message; \
  } while (0)
