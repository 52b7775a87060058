// The one error type of mxmoe: a code and a message that names what is at fault.
#pragma once

#include <stdexcept>
#include <string>

namespace mxmoe {

enum class ErrorCode {
  InvalidArgument,  // a value, id or option outside what is accepted
  Shape,            // a tensor's shape does not match what is expected
  DType,            // a tensor's dtype does not match what is expected
  Format,           // a file or encoded value is malformed
  Io,               // a file cannot be opened, mapped or written
  NotFound,         // a tensor or file that must exist does not
  Unsupported,      // valid input this build or device cannot run
  Cuda,             // a CUDA call or launch failed
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] void fail(ErrorCode code, const std::string& message);

}  // namespace mxmoe
