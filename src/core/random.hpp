// A small, fast, seedable generator (splitmix64) so synthetic data is the same on every machine
// and can be produced in parallel streams (one per expert, say) with identical results.
#pragma once

#include <cmath>
#include <cstdint>

namespace mxmoe {

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  // Standard normal (Box-Muller).
  double normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t state_;
};

// A stream id mixed into a seed, for independent parallel streams.
inline std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) {
  return SplitMix64(seed ^ (stream * 0xd1b54a32d192ed03ull + 0x8cb92ba72f3d8dd7ull)).next();
}

}  // namespace mxmoe
