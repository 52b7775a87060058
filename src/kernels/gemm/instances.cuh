// Every instantiation of the GEMM kernel, in one list: each weight format's translation unit
// (gemm/instances_*.cu) instantiates launch_format / configure_format for its format, which cover
// the five configurations x the two stages. launch.cu maps GemmFormat to those.
#pragma once

#include "kernels/gemm/configs.hpp"
#include "kernels/gemm/epilogues.cuh"
#include "kernels/gemm/kernel.cuh"
#include "kernels/gemm/weight_formats.cuh"
#include "kernels/launch.hpp"
#include "mxmoe/device_buffer.hpp"

namespace mxmoe::kernels::gemm {

template <class Format>
void launch_format(GemmTile tile, bool gate_up, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  if (max_blocks <= 0) return;
  with_config(tile, [&](auto cfg) {
    using Cfg = decltype(cfg);
    using G = Geometry<Cfg, Format::kGroup>;
    const int splits = gate_up ? 1 : (p.k_splits > 0 ? p.k_splits : 1);
    const dim3 grid((p.shape.tiles() + G::kTilesPerCta - 1) / G::kTilesPerCta, static_cast<unsigned>(max_blocks),
                    static_cast<unsigned>(splits));
    if (gate_up)
      launch_dependent(moe_gemm_kernel<Cfg, Format, GateUpActivation<Format>>, grid, dim3(G::kThreads), G::kSmemBytes, stream,
                       "moe_gemm (w13)", p);
    else
      launch_dependent(moe_gemm_kernel<Cfg, Format, RouterWeightedPartial<Format>>, grid, dim3(G::kThreads), G::kSmemBytes,
                       stream, "moe_gemm (w2)", p);
  });
}

template <class Format>
void configure_format() {
  for_each_config([](auto cfg) {
    using Cfg = decltype(cfg);
    constexpr int kSmem = Geometry<Cfg, Format::kGroup>::kSmemBytes;
    check_cuda(cudaFuncSetAttribute(moe_gemm_kernel<Cfg, Format, GateUpActivation<Format>>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem),
               "cudaFuncSetAttribute(moe_gemm w13)");
    check_cuda(cudaFuncSetAttribute(moe_gemm_kernel<Cfg, Format, RouterWeightedPartial<Format>>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem),
               "cudaFuncSetAttribute(moe_gemm w2)");
  });
}

// The one list of weight formats: (GemmFormat enumerator, policy struct). Each has a translation
// unit of its own, gemm/instances_*.cu, so that they compile in parallel.
#define MXMOE_GEMM_FORMATS(X)                                                                                     \
  X(Mxfp4, Mxfp4)                                                                                                 \
  X(Mxfp4Shifted, Mxfp4Shifted)                                                                                   \
  X(Mxfp4Wide, Mxfp4Wide)                                                                                         \
  X(Nvfp4Bf16, Nvfp4<Bf16Operands>)                                                                               \
  X(Nvfp4F16, Nvfp4<F16Operands>)

#define MXMOE_GEMM_FORMAT_INSTANCES(Format)                                                                       \
  template void launch_format<Format>(GemmTile, bool, const MoeGemmParams&, int, cudaStream_t);                  \
  template void configure_format<Format>();
#define MXMOE_GEMM_FORMAT_EXTERN(Name, Format)                                                                    \
  extern template void launch_format<Format>(GemmTile, bool, const MoeGemmParams&, int, cudaStream_t);           \
  extern template void configure_format<Format>();
MXMOE_GEMM_FORMATS(MXMOE_GEMM_FORMAT_EXTERN)

}  // namespace mxmoe::kernels::gemm
