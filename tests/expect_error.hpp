// The one way the CPU tests check an error: the call throws mxmoe::Error whose message names the
// thing at fault.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe::test {

inline void expect_error(const std::function<void()>& fn, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown, expected one mentioning '" << substring << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << "message: " << e.what();
  }
}

// As above, and the error's code must be `code`.
inline void expect_error(const std::function<void()>& fn, ErrorCode code, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown, expected one mentioning '" << substring << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << "message: " << e.what();
  }
}

}  // namespace mxmoe::test
