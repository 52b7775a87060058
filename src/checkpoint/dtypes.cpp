#include "checkpoint/dtypes.hpp"

#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {
namespace {

// Every dtype of the safetensors specification (huggingface/safetensors, Dtype enum). Sub-byte dtypes
// count elements in the shape; a tensor must still fill whole bytes.
const SafetensorsDtype kDtypes[] = {
    {"BOOL", 8, std::nullopt},        {"U8", 8, DType::U8},
    {"I8", 8, DType::I8},             {"F8_E5M2", 8, std::nullopt},
    {"F8_E4M3", 8, DType::F8_E4M3},   {"F8_E8M0", 8, DType::F8_E8M0},
    {"F8_E4M3FNUZ", 8, std::nullopt}, {"F8_E5M2FNUZ", 8, std::nullopt},
    {"I16", 16, std::nullopt},        {"U16", 16, std::nullopt},
    {"F16", 16, DType::F16},          {"BF16", 16, DType::BF16},
    {"I32", 32, DType::I32},          {"U32", 32, std::nullopt},
    {"F32", 32, DType::F32},          {"C64", 64, std::nullopt},
    {"F64", 64, DType::F64},          {"I64", 64, DType::I64},
    {"U64", 64, std::nullopt},        {"F4", 4, DType::F4_E2M1},
    {"F6_E2M3", 6, std::nullopt},     {"F6_E3M2", 6, std::nullopt},
};

}  // namespace

const SafetensorsDtype* find_safetensors_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const char* safetensors_dtype_name(DType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  fail(ErrorCode::DType, std::string("dtype ") + dtype_name(dtype) + " has no safetensors name");
}

}  // namespace mxmoe::checkpoint
