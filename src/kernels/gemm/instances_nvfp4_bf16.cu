#include "kernels/gemm/instances.cuh"

namespace mxmoe::kernels::gemm {
MXMOE_GEMM_FORMAT_INSTANCES(Nvfp4<Bf16Operands>)
}  // namespace mxmoe::kernels::gemm
