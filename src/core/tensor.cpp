#include "mxmoe/tensor.hpp"

#include <cstring>

#include "mxmoe/error.hpp"

namespace mxmoe {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::BF16:
    case DType::F16: return 2;
    case DType::U8:
    case DType::I8:
    case DType::F8_E8M0:
    case DType::F8_E4M3:
    case DType::F4_E2M1: return 1;
  }
  return 1;
}

std::size_t dtype_bytes_for(DType dtype, std::int64_t count) {
  if (dtype == DType::F4_E2M1) return static_cast<std::size_t>((count + 1) / 2);
  return static_cast<std::size_t>(count) * dtype_size(dtype);
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::F8_E8M0: return "F8_E8M0";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F4_E2M1: return "F4";
  }
  return "?";
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

HostTensor HostTensor::zeros(DType dtype, Shape shape) {
  for (auto d : shape)
    if (d < 0) fail(ErrorCode::Shape, "negative dimension in shape " + shape_str(shape));
  HostTensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  std::size_t bytes = t.nbytes();
  std::shared_ptr<std::uint8_t[]> storage(new std::uint8_t[bytes > 0 ? bytes : 1]());
  t.data_ = storage.get();
  t.keepalive_ = std::shared_ptr<const void>(storage, storage.get());
  t.owned_ = true;
  return t;
}

HostTensor HostTensor::view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> keepalive) {
  HostTensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.keepalive_ = std::move(keepalive);
  t.owned_ = false;
  return t;
}

void* HostTensor::mutable_data() {
  if (!owned_) fail(ErrorCode::InvalidArgument, "tensor is a read-only view and cannot be written");
  return const_cast<void*>(data_);
}

}  // namespace mxmoe
