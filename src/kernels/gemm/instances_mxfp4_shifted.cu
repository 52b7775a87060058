#include "kernels/gemm/instances.cuh"

namespace mxmoe::kernels::gemm {
MXMOE_GEMM_FORMAT_INSTANCES(Mxfp4Shifted)
}  // namespace mxmoe::kernels::gemm
