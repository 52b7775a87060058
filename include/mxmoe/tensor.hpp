// Element types and a host tensor that either owns its bytes or aliases someone else's
// (a memory-mapped checkpoint), kept alive through a shared pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mxmoe {

enum class DType {
  BF16,
  F16,
  F32,
  F64,
  U8,
  I8,
  I32,
  I64,
  F8_E8M0,  // power-of-two scale byte: 2^(b-127), 0xFF is NaN
  F8_E4M3,  // NVFP4 scale byte
  F4_E2M1,  // packed: two elements per byte, low nibble = even index
};

// Bytes of one element; for F4_E2M1 this is the byte holding two elements, so use
// dtype_bytes_for(dtype, count) for sizes.
std::size_t dtype_size(DType dtype);
std::size_t dtype_bytes_for(DType dtype, std::int64_t count);
const char* dtype_name(DType dtype);

using Shape = std::vector<std::int64_t>;
std::string shape_str(const Shape& shape);
std::int64_t shape_numel(const Shape& shape);

// A contiguous row-major tensor in host memory.
class HostTensor {
 public:
  HostTensor() = default;
  // A fresh zero-filled tensor that owns its storage.
  static HostTensor zeros(DType dtype, Shape shape);
  // A view of bytes owned by `keepalive` (a mapped file, say); no copy.
  static HostTensor view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> keepalive);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  std::int64_t dim(int i) const { return shape_.at(static_cast<std::size_t>(i)); }
  int rank() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const { return shape_numel(shape_); }
  std::size_t nbytes() const { return dtype_bytes_for(dtype_, numel()); }
  bool empty() const { return data_ == nullptr; }

  const void* data() const { return data_; }
  // Writable only for tensors made by zeros(); views of mapped files are read-only.
  void* mutable_data();
  template <class T> const T* as() const { return static_cast<const T*>(data_); }
  template <class T> T* mutable_as() { return static_cast<T*>(mutable_data()); }

 private:
  DType dtype_ = DType::U8;
  Shape shape_;
  const void* data_ = nullptr;
  std::shared_ptr<const void> keepalive_;
  bool owned_ = false;
};

}  // namespace mxmoe
