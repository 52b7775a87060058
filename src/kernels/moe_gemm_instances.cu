// Every instantiation of the GEMM kernel, in one place: 5 configurations x {w13, w2}.
#include "mxmoe/device_buffer.hpp"
#include "kernels/launch.hpp"
#include "kernels/moe_gemm.cuh"

#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe::kernels {
namespace {

template <class Cfg, bool kGateUp>
void launch(const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  using G = GemmGeometry<Cfg>;
  if (max_blocks <= 0) return;
  const int splits = kGateUp ? 1 : (p.k_splits > 0 ? p.k_splits : 1);
  const dim3 grid((p.shape.tiles() + G::kTilesPerCta - 1) / G::kTilesPerCta, static_cast<unsigned>(max_blocks),
                  static_cast<unsigned>(splits));
  launch_dependent(moe_gemm_kernel<Cfg, kGateUp>, grid, dim3(G::kThreads), G::kSmemBytes, stream,
                   kGateUp ? "moe_gemm (w13)" : "moe_gemm (w2)", p);
}

template <class Cfg>
void configure() {
  using G = GemmGeometry<Cfg>;
  check_cuda(cudaFuncSetAttribute(moe_gemm_kernel<Cfg, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, G::kSmemBytes),
             "cudaFuncSetAttribute(moe_gemm w13)");
  check_cuda(cudaFuncSetAttribute(moe_gemm_kernel<Cfg, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, G::kSmemBytes),
             "cudaFuncSetAttribute(moe_gemm w2)");
}

// Calls f(Cfg{}) with the configuration struct of `tile`: the one map from the public names to the
// instantiations. Auto names none (choose_gemm resolves it first).
template <class F>
auto with_config(GemmTile tile, F&& f) {
  switch (tile) {
    case GemmTile::Tiny: return f(GemmTiny{});
    case GemmTile::Decode: return f(GemmDecode{});
    case GemmTile::Small: return f(GemmSmall{});
    case GemmTile::Medium: return f(GemmMedium{});
    case GemmTile::Prefill: return f(GemmPrefill{});
    case GemmTile::Auto: break;
  }
  fail(ErrorCode::InvalidArgument, std::string("GEMM tile '") + gemm_tile_name(tile) + "' names no configuration");
}

}  // namespace

int gemm_ctas_per_block(GemmTile tile, int rows) {
  return with_config(tile, [rows](auto cfg) {
    constexpr int kTilesPerCta = GemmGeometry<decltype(cfg)>::kTilesPerCta;
    return (rows / tiling::kTileRows + kTilesPerCta - 1) / kTilesPerCta;
  });
}

int gemm_tokens_per_block(GemmTile tile) {
  return with_config(tile, [](auto cfg) { return decltype(cfg)::kTokens; });
}

GemmTile choose_gemm(int num_tokens, int top_k, int num_experts) {
  const double pairs_per_expert = static_cast<double>(num_tokens) * top_k / num_experts;
  // Thresholds from scripts/tune-gemm on an H100 (dsv4-flash and gpt-oss-120b, every tile forced).
  if (num_tokens <= 2) return GemmTile::Tiny;
  if (pairs_per_expert <= 6.5) return GemmTile::Decode;
  if (pairs_per_expert <= 12.0) return GemmTile::Small;
  if (pairs_per_expert <= 28.0) return GemmTile::Medium;
  return GemmTile::Prefill;
}

void launch_moe_gemm1(GemmTile tile, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  with_config(tile, [&](auto cfg) { launch<decltype(cfg), true>(p, max_blocks, stream); });
}
void launch_moe_gemm2(GemmTile tile, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  with_config(tile, [&](auto cfg) { launch<decltype(cfg), false>(p, max_blocks, stream); });
}

void configure_moe_gemm_kernels() {
  configure<GemmTiny>();
  configure<GemmDecode>();
  configure<GemmSmall>();
  configure<GemmMedium>();
  configure<GemmPrefill>();
}

}  // namespace mxmoe::kernels
