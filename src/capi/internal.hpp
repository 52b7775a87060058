// What the C ABI's files share: exceptions turned into status codes and the thread's last-error
// message, and the C structs turned into the library's configs.
#pragma once

#include <new>
#include <string>

#include "mxmoe/c_api.h"
#include "mxmoe/config.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/weights.hpp"

namespace mxmoe::capi {

void set_last_error(const std::string& message);

// Runs `f`; 0 when it returns, otherwise the error's code + 1 with its message kept.
template <class F>
int guarded(const char* entry, F&& f) noexcept {
  try {
    f();
    return MXMOE_OK;
  } catch (const Error& e) {
    set_last_error(e.what());
    return static_cast<int>(e.code()) + 1;
  } catch (const std::bad_alloc&) {
    set_last_error(std::string(entry) + ": out of host memory");
    return MXMOE_E_INTERNAL;
  } catch (const std::exception& e) {
    set_last_error(std::string(entry) + ": " + e.what());
    return MXMOE_E_INTERNAL;
  }
}

// Throws InvalidArgument naming the pointer when it is null.
void require(const void* p, const char* entry, const char* name);

// The C structs as validated configs (InvalidArgument naming the field otherwise).
ActivationConfig activation_of(const mxmoe_activation& a);
// mxmoe_weights' group and f16_activations as a format (fp16 with MXFP4 refused, saying why).
WeightFormat format_of(const mxmoe_weights& w);
// mxmoe_weights.fp8_activations as a precision: 0 Bf16 (16-bit activations, as format_of says), 1
// Fp8PerToken (W4A8), which needs MXFP4 (Unsupported otherwise) and bf16 (DType otherwise); errors name
// `entry` and the field.
ActivationPrecision precision_of(const mxmoe_weights& w, const char* entry);
RoutingConfig routing_of(const mxmoe_routing& r, int num_experts);

}  // namespace mxmoe::capi
