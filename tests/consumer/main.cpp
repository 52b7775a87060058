// Uses mxmoe through its public headers only: synthetic weights, the CPU oracle, the backend query.
#include <cmath>
#include <cstring>
#include <cstdio>
#include <vector>

#include "mxmoe/c_api.h"
#include "mxmoe/moe_layer.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/weights.hpp"

int main() {
  mxmoe::SyntheticSpec spec;
  spec.num_experts = 4;
  spec.hidden = 64;
  spec.inter = 32;
  const mxmoe::CanonicalMoeWeights w = mxmoe::make_synthetic_weights(spec);
  const int T = 3;
  std::vector<std::uint16_t> hidden(T * spec.hidden, 0x3f80);  // bf16 1.0
  mxmoe::TopK topk{T, 2, {0, 1, 2, 3, 1, -1}, {0.5f, 0.5f, 0.25f, 0.75f, 1.0f, 0.0f}};
  const auto out = mxmoe::reference::moe_forward(w, hidden.data(), T, topk, mxmoe::ActivationConfig::silu_mul(), 1);
  double norm = 0;
  for (auto b : out) {
    std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    norm += static_cast<double>(f) * f;
  }
  if (!(norm > 0) || !std::isfinite(norm)) {
    std::printf("consumer: bad oracle output (norm %g)\n", norm);
    return 1;
  }
  std::printf("consumer: oracle ok (|out|^2 = %.6g), CUDA backend compiled: %s\n", norm,
              mxmoe::cuda_backend_compiled() ? "yes" : "no");
  return 0;
}
