// GemmFormat -> the format's instantiations (gemm/instances_*.cu), through the one format list.
#include "kernels/gemm/instances.cuh"

namespace mxmoe::kernels {
namespace gemm {
namespace {
void launch(GemmTile tile, GemmFormat format, bool gate_up, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  switch (format) {
#define MXMOE_GEMM_LAUNCH_CASE(Name, Format) \
  case GemmFormat::Name: return launch_format<Format>(tile, gate_up, p, max_blocks, stream);
    MXMOE_GEMM_FORMATS(MXMOE_GEMM_LAUNCH_CASE)
#undef MXMOE_GEMM_LAUNCH_CASE
  }
  fail(ErrorCode::InvalidArgument, "GEMM launch: unknown weight format");
}
}  // namespace
}  // namespace gemm

void launch_moe_gemm1(GemmTile tile, GemmFormat format, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  gemm::launch(tile, format, true, p, max_blocks, stream);
}
void launch_moe_gemm2(GemmTile tile, GemmFormat format, const MoeGemmParams& p, int max_blocks, cudaStream_t stream) {
  gemm::launch(tile, format, false, p, max_blocks, stream);
}

void configure_moe_gemm_kernels() {
  using namespace gemm;
#define MXMOE_GEMM_CONFIGURE(Name, Format) configure_format<Format>();
  MXMOE_GEMM_FORMATS(MXMOE_GEMM_CONFIGURE)
#undef MXMOE_GEMM_CONFIGURE
}

}  // namespace mxmoe::kernels
