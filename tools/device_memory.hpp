// Host <-> device copies for the commands that drive the GPU layer (demo, verify), on the library's
// own DeviceBuffer and CUDA error check.
#pragma once

#ifdef MXMOE_HAVE_CUDA
#include <cuda_runtime.h>

#include <vector>

#include "kernels/cuda_check.hpp"
#include "layer/device_buffer.hpp"

namespace mxmoe::cli {

using kernels::check_cuda;

template <class T>
DeviceBuffer to_device(const std::vector<T>& host, const char* what) {
  DeviceBuffer buffer(host.size() * sizeof(T), what);
  check_cuda(cudaMemcpy(buffer.as(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), what);
  return buffer;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer& buffer, std::size_t count, const char* what) {
  std::vector<T> host(count);
  check_cuda(cudaMemcpy(host.data(), buffer.as(), count * sizeof(T), cudaMemcpyDeviceToHost), what);
  return host;
}

}  // namespace mxmoe::cli
#endif
