// Which GPU we are on, and whether the Hopper kernels may run there.
#include <cuda_runtime.h>

#include <string>

#include "mxmoe/moe_layer.hpp"

namespace mxmoe {

bool cuda_backend_compiled() { return true; }

DeviceCheck check_hopper_device(int device) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return {false, std::string("no CUDA device found (") + (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") + ")"};
  }
  if (device < 0 || device >= count)
    return {false, "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " found)"};
  cudaDeviceProp prop{};
  err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) return {false, std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(err)};
  const std::string name = std::string(prop.name) + " (compute capability " + std::to_string(prop.major) + "." +
                           std::to_string(prop.minor) + ")";
  if (prop.major != 9 || prop.minor != 0)
    return {false, "the mxmoe kernels are built for Hopper (sm_90a, compute capability 9.0) only; device " +
                       std::to_string(device) + " is " + name};
  return {true, name};
}

}  // namespace mxmoe
