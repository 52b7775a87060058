// Every instantiation of the GEMM kernels, in one list: each weight format's translation unit
// (gemm/instances_*.cu) instantiates launch_format / configure_format for its format, which cover
// the configurations (each runs the mma.sync kernel, or the wgmma one if it says kWgmma) x the two
// stages, and GEMM1's split stage (GateUpPartial) for the configurations that say kSplitGateUp.
// launch.cu maps GemmFormat to those.
#pragma once

#include "kernels/gemm/configs.hpp"
#include "kernels/gemm/epilogues.cuh"
#include "kernels/gemm/kernel.cuh"
#include "kernels/gemm/weight_formats.cuh"
#include "kernels/gemm/wgmma_kernel.cuh"
#include "kernels/launch.hpp"
#include "mxmoe/device_buffer.hpp"

namespace mxmoe::kernels::gemm {

template <class T>
struct TypeTag {
  using type = T;
};

// The kernel a configuration runs, with its geometry.
template <class Cfg, class Format, class Stage>
struct KernelOf {
  static constexpr bool kWgmma = UsesWgmma<Cfg>::value;
  using G = std::conditional_t<kWgmma, WgmmaGeometryOf<Cfg, Format>, GeometryOf<Cfg, Format>>;
  static constexpr auto function() {
    if constexpr (kWgmma) return &moe_gemm_wgmma_kernel<Cfg, Format, Stage>;
    else return &moe_gemm_kernel<Cfg, Format, Stage>;
  }
};

template <class Format>
void launch_format(GemmTile tile, bool gate_up, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  if (max_blocks <= 0) return;
  with_config(tile, [&](auto cfg) {
    using Cfg = decltype(cfg);
    const int splits = p.k_splits > 0 ? p.k_splits : 1;
    if (UsesWgmma<Cfg>::value && splits != 1)
      fail(ErrorCode::InvalidArgument, "GEMM launch: the wgmma configuration does not split K");
    if (UsesWgmma<Cfg>::value && p.direct_ids)
      fail(ErrorCode::InvalidArgument, "GEMM launch: the wgmma configuration takes aligned blocks, not direct ones");
    if (p.direct_ids && p.direct_blocks > kDirectMaxPairs)
      fail(ErrorCode::InvalidArgument, "GEMM launch: " + std::to_string(p.direct_blocks) + " direct blocks, more than kDirectMaxPairs (" +
                                           std::to_string(kDirectMaxPairs) + ") read in one pass; align them");
    auto launch_stage = [&](auto stage, const char* what) {
      using K = KernelOf<Cfg, Format, typename decltype(stage)::type>;
      const int tiles_x = (p.shape.tiles() + K::G::kTilesPerCta - 1) / K::G::kTilesPerCta;
      // mma.sync: a CTA per (tile group, block, split); wgmma: persistent CTAs over the
      // (tile group, block) items, at most one per SM.
      dim3 grid(tiles_x, static_cast<unsigned>(max_blocks), static_cast<unsigned>(splits));
      if constexpr (K::kWgmma) {
        const long long items = static_cast<long long>(tiles_x) * max_blocks;
        grid = dim3(static_cast<unsigned>(p.persistent_ctas > 0 && p.persistent_ctas < items ? p.persistent_ctas : items), 1, 1);
      }
      launch_dependent(K::function(), grid, dim3(K::G::kBlockThreads), K::G::kSmemBytes, stream, what, p);
    };
    if (!gate_up) return launch_stage(TypeTag<RouterWeightedPartial<Format>>{}, "moe_gemm (w2)");
    if (splits == 1) return launch_stage(TypeTag<GateUpActivation<Format>>{}, "moe_gemm (w13)");
    if constexpr (SplitsGateUp<Cfg>::value) return launch_stage(TypeTag<GateUpPartial<Format>>{}, "moe_gemm (w13, K split)");
    fail(ErrorCode::InvalidArgument, std::string("GEMM launch: the ") + gemm_tile_name(tile) + " configuration does not split GEMM1's K");
  });
}

template <class Format>
void configure_format() {
  for_each_config([](auto cfg) {
    using Cfg = decltype(cfg);
    using K13 = KernelOf<Cfg, Format, GateUpActivation<Format>>;
    using K2 = KernelOf<Cfg, Format, RouterWeightedPartial<Format>>;
    check_cuda(cudaFuncSetAttribute(K13::function(), cudaFuncAttributeMaxDynamicSharedMemorySize, K13::G::kSmemBytes),
               "cudaFuncSetAttribute(moe_gemm w13)");
    check_cuda(cudaFuncSetAttribute(K2::function(), cudaFuncAttributeMaxDynamicSharedMemorySize, K2::G::kSmemBytes),
               "cudaFuncSetAttribute(moe_gemm w2)");
    if constexpr (SplitsGateUp<Cfg>::value) {
      using K13s = KernelOf<Cfg, Format, GateUpPartial<Format>>;
      check_cuda(cudaFuncSetAttribute(K13s::function(), cudaFuncAttributeMaxDynamicSharedMemorySize, K13s::G::kSmemBytes),
                 "cudaFuncSetAttribute(moe_gemm w13, K split)");
    }
  });
}

// The one list of weight formats: (GemmFormat enumerator, policy struct). Each has a translation
// unit of its own, gemm/instances_*.cu, so that they compile in parallel.
#define MXMOE_GEMM_FORMATS(X)                                                                                     \
  X(Mxfp4, Mxfp4)                                                                                                 \
  X(Mxfp4Shifted, Mxfp4Shifted)                                                                                   \
  X(Mxfp4Wide, Mxfp4Wide)                                                                                         \
  X(Nvfp4Bf16, Nvfp4<Bf16Operands>)                                                                               \
  X(Nvfp4F16, Nvfp4<F16Operands>)                                                                                 \
  X(Mxfp4E4m3, Mxfp4E4m3)

#define MXMOE_GEMM_FORMAT_INSTANCES(Format)                                                                       \
  template void launch_format<Format>(GemmTile, bool, const MoeGemmParams&, int, cudaStream_t);                  \
  template void configure_format<Format>();
#define MXMOE_GEMM_FORMAT_EXTERN(Name, Format)                                                                    \
  extern template void launch_format<Format>(GemmTile, bool, const MoeGemmParams&, int, cudaStream_t);           \
  extern template void configure_format<Format>();
MXMOE_GEMM_FORMATS(MXMOE_GEMM_FORMAT_EXTERN)

}  // namespace mxmoe::kernels::gemm
