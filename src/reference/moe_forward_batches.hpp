// moe_forward with an explicit scratch budget, so tests can force several token batches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mxmoe/reference.hpp"

namespace mxmoe::reference::detail {

// Tokens are processed in batches whose fp32 scratch (h13, a, y) stays near `scratch_bytes`
// (at least one token per batch). The result does not depend on the batch size.
std::vector<std::uint16_t> moe_forward_in_batches(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                                  const TopK& topk, const ActivationConfig& act, int threads,
                                                  std::size_t scratch_bytes,
                                                  ActivationPrecision precision = ActivationPrecision::Bf16);

}  // namespace mxmoe::reference::detail
