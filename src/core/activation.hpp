// The expert MLP's activation on one (gate, up) pair, as ActivationConfig (mxmoe/config.hpp) defines
// it. The one formula of mxmoe: the oracle (fp32), its float64 twin, the GPU GEMM epilogue and the
// bench's bf16 baseline all call it, so they cannot drift apart.
#pragma once

#include <cmath>

#include "formats/host_device.hpp"
#include "mxmoe/config.hpp"

namespace mxmoe {

MXMOE_HD float activation_exp(float x) { return expf(x); }
MXMOE_HD double activation_exp(double x) { return exp(x); }

// SiluMul: silu(g) * u. ClampedSiluMul: the same after g = min(g, limit), u = clamp(u, -limit, limit).
// GptOssSwiglu: (u + 1) * g * sigmoid(alpha g) after the same clamps. T is float or double.
template <class T>
MXMOE_HD T activate(ActivationKind kind, T g, T u, T limit, T alpha) {
  if (kind != ActivationKind::SiluMul) {
    g = limit < g ? limit : g;
    u = u < -limit ? -limit : (limit < u ? limit : u);
  }
  if (kind == ActivationKind::GptOssSwiglu) return (u + T(1)) * g / (T(1) + activation_exp(-alpha * g));
  return g / (T(1) + activation_exp(-g)) * u;
}

template <class T>
MXMOE_HD T activate(const ActivationConfig& act, T g, T u) {
  return activate<T>(act.kind, g, u, static_cast<T>(act.limit), static_cast<T>(act.alpha));
}

}  // namespace mxmoe
