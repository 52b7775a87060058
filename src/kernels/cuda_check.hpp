// CUDA errors become mxmoe::Error with the call that failed in the message.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe::kernels {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::Cuda, std::string(what) + ": " + cudaGetErrorString(err));
}

// After a launch: catches bad configurations at once (no host synchronisation).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

}  // namespace mxmoe::kernels
