// One-off measurement: W4A8 (the FP8 oracle) and W4A16 (the bf16 oracle) against the float64
// recomputation of the bf16 math, on preset shapes with fewer experts (CPU only).
#include <cstdio>
#include "mxmoe/presets.hpp"
#include "mxmoe/reference.hpp"
#include "mxmoe/verify.hpp"
#include "mxmoe/weights.hpp"
using namespace mxmoe;
int main() {
  struct S { const char* preset; int E; float std; };
  for (S s : {S{"dsv4-flash", 16, 4.0f}, S{"gpt-oss-120b", 8, 4.0f}, S{"qwen3-30b", 32, 1.0f}, S{"dsv3", 12, 1.0f}}) {
    const ModelPreset& p = find_preset(s.preset);
    SyntheticSpec spec; spec.num_experts = s.E; spec.hidden = p.hidden; spec.inter = p.inter; spec.with_biases = p.biases; spec.seed = 42;
    const auto w = make_synthetic_weights(spec);
    const int T = 16, k = p.top_k;
    const auto hidden = verify::random_hidden(T, p.hidden, 7, s.std);
    const TopK topk = verify::random_topk(T, s.E, k, 8);
    std::vector<int> rows(T); for (int t = 0; t < T; ++t) rows[t] = t;
    const auto f64 = reference::moe_forward_f64(w, hidden.data(), T, topk, p.activation, rows);
    const auto bf = reference::moe_forward(w, hidden.data(), T, topk, p.activation);
    const auto f8 = reference::moe_forward(w, hidden.data(), T, topk, p.activation, ActivationPrecision::Fp8PerToken);
    std::printf("%-14s E=%d H=%d I=%d k=%d T=%d: W4A16 vs f64 %.2e   W4A8 vs f64 %.2e   W4A8 vs W4A16 %.2e\n", s.preset, s.E, p.hidden,
                p.inter, k, T, verify::compare(bf, f64).relative_error, verify::compare(f8, f64).relative_error,
                verify::compare(f8, bf).relative_error);
  }
}
