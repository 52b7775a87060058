// Input checks shared by the fp32 oracle and its float64 twin.
#pragma once

#include <cstdint>

#include "mxmoe/reference.hpp"

namespace mxmoe::reference::detail {

// Validates the weights, the activation, the token count, the hidden pointer and every id and
// weight of `topk`; throws mxmoe::Error prefixed with `who`.
void validate_forward_inputs(const char* who, const CanonicalMoeWeights& w, const std::uint16_t* hidden,
                             int num_tokens, const TopK& topk, const ActivationConfig& act);

}  // namespace mxmoe::reference::detail
