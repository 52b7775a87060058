// CUDA and cuBLAS status codes of the bench become mxmoe::Error naming the component and the step;
// CUDA's through the library's one check (mxmoe/device_buffer.hpp).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "mxmoe/device_buffer.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::bench {

inline void check(cudaError_t err, const std::string& what, const char* component = "bench") {
  if (err != cudaSuccess) check_cuda(err, std::string(component) + ": " + what);
}

inline void check_cublas(cublasStatus_t status, const std::string& what, const char* component = "bench") {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(ErrorCode::Cuda, std::string(component) + ": " + what + ": cuBLAS status " + std::to_string(static_cast<int>(status)));
}

}  // namespace mxmoe::bench
