#include "kernels/gemm/instances.cuh"

namespace mxmoe::kernels::gemm {
MXMOE_GEMM_FORMAT_INSTANCES(Mxfp4E4m3)
}  // namespace mxmoe::kernels::gemm
