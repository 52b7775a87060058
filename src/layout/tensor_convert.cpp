#include "layout/tensor_convert.hpp"

#include <cmath>
#include <cstring>
#include <sstream>

#include "formats/bf16.hpp"
#include "formats/fp16.hpp"
#include "formats/mxfp4.hpp"
#include "formats/nvfp4.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::layout {
namespace {

bool is_float_dtype(DType d) { return d == DType::BF16 || d == DType::F16 || d == DType::F32; }


}  // namespace

std::string index_str(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    const std::int64_t d = shape[k] > 0 ? shape[k] : 1;
    idx[k] = flat % d;
    flat /= d;
  }
  return shape_str(idx);
}

Shape packed_logical_shape(const TensorInfo& info) {
  if (info.dtype_name == "F4") return info.shape;
  if (info.dtype_name != "U8" && info.dtype_name != "I8")
    fail(ErrorCode::DType, "tensor '" + info.name + "' has dtype " + info.dtype_name +
                               ", expected packed E2M1 (U8, I8 or F4)" +
                               (info.dtype_name == "BF16" || info.dtype_name == "F16" || info.dtype_name == "F32"
                                    ? ": the layer is not quantized, run `mxmoe quantize` first"
                                    : ""));
  if (info.shape.empty()) fail(ErrorCode::Shape, "tensor '" + info.name + "' is a scalar, expected packed E2M1 rows");
  Shape s = info.shape;
  s.back() *= 2;
  return s;
}

HostTensor packed_view(const Checkpoint& ckpt, const std::string& name, const Shape& logical) {
  Shape bytes = logical;
  bytes.back() /= 2;
  return ckpt.view_as(name, DType::U8, bytes);
}

void expect_shape(const std::string& name, const Shape& found, const Shape& expected, const char* what) {
  if (found != expected)
    fail(ErrorCode::Shape, "tensor '" + name + "' (" + what + ") has shape " + shape_str(found) + ", expected " + shape_str(expected));
}

void check_e8m0(const HostTensor& t, const std::string& name) {
  const auto* p = t.as<std::uint8_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (p[i] == formats::kE8m0Nan)
      fail(ErrorCode::Format, "tensor '" + name + "': scale at index " + index_str(t.shape(), i) + " is the E8M0 NaN byte 0xFF");
  }
}

bool scales_to_e8m0(const HostTensor& t, const std::string& name, std::uint8_t* dst) {
  const std::int64_t n = t.numel();
  if (t.dtype() == DType::U8 || t.dtype() == DType::F8_E8M0) {
    check_e8m0(t, name);
    std::memcpy(dst, t.data(), static_cast<std::size_t>(n));
    return false;
  }
  if (!is_float_dtype(t.dtype()))
    fail(ErrorCode::DType, "tensor '" + name + "' holds scales of dtype " + dtype_name(t.dtype()) + ", expected U8, F8_E8M0, BF16, F16 or F32");
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = load_float(t, i);
    if (std::isnan(v)) fail(ErrorCode::Format, "tensor '" + name + "': scale at index " + index_str(t.shape(), i) + " is NaN");
    if (!formats::e8m0_from_float(v, &dst[i])) {
      std::ostringstream os;
      os.precision(9);
      os << v;
      const std::string at = "tensor '" + name + "': scale " + os.str() + " at index " + index_str(t.shape(), i);
      int exp = 0;
      if (v > 0.0f && std::isfinite(v) && std::frexp(v, &exp) == 0.5f)  // v = 2^(exp-1): a power of two E8M0 cannot hold
        fail(ErrorCode::Format, at + " is 2^" + std::to_string(exp - 1) + ", an exact power of two outside E8M0's range 2^-127..2^127");
      fail(ErrorCode::Format, at + " is not an exact power of two, so it has no lossless E8M0 form");
    }
  }
  return true;
}

HostTensor e8m0_scales(const Checkpoint& ckpt, const std::string& name, bool* converted, bool* zero_copy) {
  HostTensor t = ckpt.view(name);
  if (t.dtype() == DType::U8 || t.dtype() == DType::F8_E8M0) {
    check_e8m0(t, name);
    *zero_copy = true;
    return ckpt.view_as(name, DType::U8, t.shape());
  }
  HostTensor out = HostTensor::zeros(DType::U8, t.shape());
  *converted = scales_to_e8m0(t, name, out.mutable_as<std::uint8_t>()) || *converted;
  *zero_copy = false;
  return out;
}

HostTensor ue4m3_scales(const Checkpoint& ckpt, const std::string& name) {
  const HostTensor t = ckpt.view(name);
  if (t.dtype() != DType::U8 && t.dtype() != DType::F8_E4M3)
    fail(ErrorCode::DType, "tensor '" + name + "' holds NVFP4 block scales of dtype " + dtype_name(t.dtype()) + ", expected F8_E4M3 (or U8)");
  const auto* p = t.as<std::uint8_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (p[i] == formats::kUe4m3Nan)
      fail(ErrorCode::Format, "tensor '" + name + "': scale at index " + index_str(t.shape(), i) + " is the E4M3 NaN byte 0x7F");
    if (p[i] & 0x80u)
      fail(ErrorCode::Format, "tensor '" + name + "': scale at index " + index_str(t.shape(), i) + " is byte " + std::to_string(p[i]) + " (" +
                                  std::to_string(formats::e4m3_decode(p[i])) + "), whose sign bit is set: NVFP4 block scales are unsigned (UE4M3)");
  }
  return ckpt.view_as(name, DType::U8, t.shape());
}

float load_float(const HostTensor& t, std::int64_t i) {
  switch (t.dtype()) {
    case DType::F32: {
      float v;
      std::memcpy(&v, static_cast<const std::uint8_t*>(t.data()) + 4 * i, 4);
      return v;
    }
    case DType::BF16: {
      std::uint16_t b;
      std::memcpy(&b, static_cast<const std::uint8_t*>(t.data()) + 2 * i, 2);
      return formats::bf16_to_float(b);
    }
    case DType::F16: {
      std::uint16_t b;
      std::memcpy(&b, static_cast<const std::uint8_t*>(t.data()) + 2 * i, 2);
      return formats::fp16_to_float(b);
    }
    default: fail(ErrorCode::DType, std::string("cannot read dtype ") + dtype_name(t.dtype()) + " as float");
  }
}

HostTensor to_f32(const Checkpoint& ckpt, const std::string& name) {
  const TensorInfo& info = ckpt.info(name);
  if (!info.dtype || !is_float_dtype(*info.dtype))
    fail(ErrorCode::DType, "tensor '" + name + "' has dtype " + info.dtype_name + ", expected BF16, F16 or F32");
  HostTensor src = ckpt.view(name);
  HostTensor out = HostTensor::zeros(DType::F32, src.shape());
  float* dst = out.mutable_as<float>();
  for (std::int64_t i = 0; i < src.numel(); ++i) dst[i] = load_float(src, i);
  return out;
}

}  // namespace mxmoe::layout
