#include "mxmoe/error.hpp"

namespace mxmoe {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid argument";
    case ErrorCode::Shape: return "shape error";
    case ErrorCode::DType: return "dtype error";
    case ErrorCode::Format: return "format error";
    case ErrorCode::Io: return "I/O error";
    case ErrorCode::NotFound: return "not found";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::Cuda: return "CUDA error";
  }
  return "error";
}

Error::Error(ErrorCode code, const std::string& message)
    : std::runtime_error(std::string(error_code_name(code)) + ": " + message), code_(code) {}

void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace mxmoe
