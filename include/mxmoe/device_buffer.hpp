// CUDA builds only: the one CUDA status check and the one owning device allocation of mxmoe, used by
// the layer, the kernels' launchers, the bench, the CLI and the GPU tests alike. Every CUDA call
// here is checked; a failure is an mxmoe::Error (ErrorCode::Cuda) naming the call or the buffer.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "mxmoe/error.hpp"

namespace mxmoe {

// Throws "<what>: <CUDA's error string>" unless err is cudaSuccess.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::Cuda, std::string(what) + ": " + cudaGetErrorString(err));
}
inline void check_cuda(cudaError_t err, const std::string& what) { check_cuda(err, what.c_str()); }

// After a launch: catches bad configurations at once (no host synchronisation).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

// cudaMalloc'd bytes, freed when the buffer goes out of scope; movable, not copyable. `what` names
// the buffer in every error (allocation, copies, fill).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::size_t bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {
    if (bytes == 0) return;
    const cudaError_t err = cudaMalloc(&ptr_, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // an allocation error is not sticky: clear it so a later launch check does not report it
      ptr_ = nullptr;
      fail(ErrorCode::Cuda, "cannot allocate " + std::to_string(bytes) + " bytes on the GPU for " + what_ + ": " +
                                cudaGetErrorString(err));
    }
  }
  // A buffer holding a copy of `host`.
  template <class T>
  static DeviceBuffer from_host(const std::vector<T>& host, std::string what) {
    DeviceBuffer b(host.size() * sizeof(T), std::move(what));
    b.upload(host.data(), host.size() * sizeof(T));
    return b;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), what_(std::move(o.what_)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(what_, o.what_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <class T = void>
  T* as() const { return static_cast<T*>(ptr_); }
  std::size_t bytes() const { return bytes_; }

  // Host -> device at a byte offset; the range must lie inside the buffer.
  void upload(const void* host, std::size_t bytes, std::size_t offset = 0) {
    if (offset + bytes > bytes_)
      fail(ErrorCode::InvalidArgument, "upload of " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                                           " overruns " + what_ + " (" + std::to_string(bytes_) + " bytes)");
    if (bytes) check_cuda(cudaMemcpy(static_cast<char*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice), "upload to " + what_);
  }
  // Device -> host, the first `bytes` bytes.
  void download(void* host, std::size_t bytes) const {
    if (bytes > bytes_)
      fail(ErrorCode::InvalidArgument, "download of " + std::to_string(bytes) + " bytes overruns " + what_ + " (" +
                                           std::to_string(bytes_) + " bytes)");
    if (bytes) check_cuda(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost), "download from " + what_);
  }
  // The whole buffer as bytes() / sizeof(T) elements.
  template <class T>
  std::vector<T> to_host() const {
    std::vector<T> host(bytes_ / sizeof(T));
    download(host.data(), host.size() * sizeof(T));
    return host;
  }
  // Every byte set to `byte`; 0xFF makes every bf16 and fp32 element a NaN, so an output element
  // a kernel forgets to write fails any check (verify.hpp's NaN rule).
  void fill(unsigned char byte) {
    if (bytes_) check_cuda(cudaMemset(ptr_, byte, bytes_), "fill of " + what_);
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
  std::string what_;
};

}  // namespace mxmoe
