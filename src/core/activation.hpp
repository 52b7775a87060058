// The expert MLP's activation on one (gate, up) pair, as ActivationConfig (mxmoe/config.hpp) defines
// it. The one formula of mxmoe: the oracle (fp32), its float64 twin, the GPU GEMM epilogue and the
// bench's bf16 baseline all call it, so they cannot drift apart.
#pragma once

#include <cmath>

#include "formats/host_device.hpp"
#include "mxmoe/config.hpp"

namespace mxmoe {

// exp and a / b. On the GPU, fp32 takes the hardware's approximations (ex2.approx after a multiply by
// log2 e; rcp.approx times a): a few ulp of fp32, far below the bf16 (or e4m3) rounding of the
// stored intermediate, where the IEEE forms cost the epilogue a slow-path check and a call per pair
// (ncu: 12% of GEMM1's consumer time is the epilogue). The CPU keeps the IEEE forms.
MXMOE_HD float activation_exp(float x) {
#ifdef __CUDA_ARCH__
  return __expf(x);
#else
  return expf(x);
#endif
}
MXMOE_HD double activation_exp(double x) { return exp(x); }
MXMOE_HD float activation_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdividef(a, b);  // b = 1 + exp(..) >= 1; b = inf (exp overflow) gives 0, as a / inf does
#else
  return a / b;
#endif
}
MXMOE_HD double activation_div(double a, double b) { return a / b; }

// SiluMul: silu(g) * u. ClampedSiluMul: the same after g = min(g, limit), u = clamp(u, -limit, limit).
// GptOssSwiglu: (u + 1) * g * sigmoid(alpha g) after the same clamps. T is float or double.
template <class T>
MXMOE_HD T activate(ActivationKind kind, T g, T u, T limit, T alpha) {
  if (kind != ActivationKind::SiluMul) {
    g = limit < g ? limit : g;
    u = u < -limit ? -limit : (limit < u ? limit : u);
  }
  if (kind == ActivationKind::GptOssSwiglu) return activation_div((u + T(1)) * g, T(1) + activation_exp(-alpha * g));
  return activation_div(g, T(1) + activation_exp(-g)) * u;
}

template <class T>
MXMOE_HD T activate(const ActivationConfig& act, T g, T u) {
  return activate<T>(act.kind, g, u, static_cast<T>(act.limit), static_cast<T>(act.alpha));
}

}  // namespace mxmoe
