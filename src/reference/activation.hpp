// The expert MLP's activation on one (gate, up) pair, in fp32, as ActivationConfig defines it.
#pragma once

#include <algorithm>
#include <cmath>

#include "mxmoe/config.hpp"

namespace mxmoe::reference::detail {

inline float activate(float g, float u, const ActivationConfig& act) {
  switch (act.kind) {
    case ActivationKind::SiluMul: return g / (1.0f + std::exp(-g)) * u;
    case ActivationKind::ClampedSiluMul:
      g = std::min(g, act.limit);
      u = std::clamp(u, -act.limit, act.limit);
      return g / (1.0f + std::exp(-g)) * u;
    case ActivationKind::GptOssSwiglu:
      g = std::min(g, act.limit);
      u = std::clamp(u, -act.limit, act.limit);
      return (u + 1.0f) * g / (1.0f + std::exp(-act.alpha * g));
  }
  return 0.0f;
}

}  // namespace mxmoe::reference::detail
