// Every instantiation of the GEMM kernel, in one place: 5 configurations x {w13, w2}.
#include "kernels/cuda_check.hpp"
#include "kernels/launch.hpp"
#include "kernels/moe_gemm.cuh"

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

template <bool kGateUp>
void dispatch(GemmKind kind, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  switch (kind) {
    case GemmKind::Tiny: return launch<GemmTiny, kGateUp>(p, max_blocks, stream);
    case GemmKind::Decode: return launch<GemmDecode, kGateUp>(p, max_blocks, stream);
    case GemmKind::Small: return launch<GemmSmall, kGateUp>(p, max_blocks, stream);
    case GemmKind::Medium: return launch<GemmMedium, kGateUp>(p, max_blocks, stream);
    case GemmKind::Prefill: return launch<GemmPrefill, kGateUp>(p, max_blocks, stream);
  }
}

}  // namespace

int gemm_ctas_per_block(GemmKind kind, int rows) {
  auto ctas = [rows](int tiles_per_cta) { return (rows / layout::kTileRows + tiles_per_cta - 1) / tiles_per_cta; };
  switch (kind) {
    case GemmKind::Tiny: return ctas(GemmGeometry<GemmTiny>::kTilesPerCta);
    case GemmKind::Decode: return ctas(GemmGeometry<GemmDecode>::kTilesPerCta);
    case GemmKind::Small: return ctas(GemmGeometry<GemmSmall>::kTilesPerCta);
    case GemmKind::Medium: return ctas(GemmGeometry<GemmMedium>::kTilesPerCta);
    case GemmKind::Prefill: return ctas(GemmGeometry<GemmPrefill>::kTilesPerCta);
  }
  return 1;
}

int gemm_tokens_per_block(GemmKind kind) {
  switch (kind) {
    case GemmKind::Tiny: return GemmTiny::kTokens;
    case GemmKind::Decode: return GemmDecode::kTokens;
    case GemmKind::Small: return GemmSmall::kTokens;
    case GemmKind::Medium: return GemmMedium::kTokens;
    case GemmKind::Prefill: return GemmPrefill::kTokens;
  }
  return GemmDecode::kTokens;
}

GemmKind choose_gemm(int num_tokens, int top_k, int num_experts) {
  const double pairs_per_expert = static_cast<double>(num_tokens) * top_k / num_experts;
  // Thresholds from scripts/tune-gemm on an H100 (dsv4-flash and gpt-oss-120b, every tile forced).
  if (num_tokens <= 2) return GemmKind::Tiny;
  if (pairs_per_expert <= 6.5) return GemmKind::Decode;
  if (pairs_per_expert <= 12.0) return GemmKind::Small;
  if (pairs_per_expert <= 28.0) return GemmKind::Medium;
  return GemmKind::Prefill;
}

void launch_moe_gemm1(GemmKind kind, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  dispatch<true>(kind, p, max_blocks, stream);
}
void launch_moe_gemm2(GemmKind kind, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  dispatch<false>(kind, p, max_blocks, stream);
}

void configure_moe_gemm_kernels() {
  configure<GemmTiny>();
  configure<GemmDecode>();
  configure<GemmSmall>();
  configure<GemmMedium>();
  configure<GemmPrefill>();
}

}  // namespace mxmoe::kernels
