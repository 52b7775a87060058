#include "reference/forward_inputs.hpp"

#include <cmath>
#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe::reference::detail {

void validate_forward_inputs(const char* who, const CanonicalMoeWeights& w, const std::uint16_t* hidden,
                             int num_tokens, const TopK& topk, const ActivationConfig& act) {
  const std::string pre = std::string(who) + ": ";
  w.validate();
  act.validate();
  if (num_tokens < 0) fail(ErrorCode::InvalidArgument, pre + "num_tokens must be >= 0, got " + std::to_string(num_tokens));
  if (num_tokens > 0 && hidden == nullptr) fail(ErrorCode::InvalidArgument, pre + "hidden is a null pointer");
  if (topk.num_tokens != num_tokens)
    fail(ErrorCode::Shape, pre + "topk.num_tokens is " + std::to_string(topk.num_tokens) + ", expected num_tokens = " + std::to_string(num_tokens));
  if (topk.top_k < 1) fail(ErrorCode::InvalidArgument, pre + "topk.top_k must be >= 1, got " + std::to_string(topk.top_k));
  const std::size_t expected = static_cast<std::size_t>(num_tokens) * static_cast<std::size_t>(topk.top_k);
  if (topk.ids.size() != expected)
    fail(ErrorCode::Shape, pre + "topk.ids has " + std::to_string(topk.ids.size()) + " entries, expected T*k = " +
                               std::to_string(num_tokens) + "*" + std::to_string(topk.top_k) + " = " + std::to_string(expected));
  if (topk.weights.size() != expected)
    fail(ErrorCode::Shape, pre + "topk.weights has " + std::to_string(topk.weights.size()) + " entries, expected T*k = " +
                               std::to_string(num_tokens) + "*" + std::to_string(topk.top_k) + " = " + std::to_string(expected));
  for (std::size_t i = 0; i < expected; ++i) {
    const std::int32_t id = topk.ids[i];
    const std::string where = "token " + std::to_string(i / topk.top_k) + " slot " + std::to_string(i % topk.top_k);
    if (id < -1 || id >= w.num_experts)
      fail(ErrorCode::InvalidArgument, pre + where + ": expert id " + std::to_string(id) + " is outside -1.." + std::to_string(w.num_experts - 1));
    if (!std::isfinite(topk.weights[i]))
      fail(ErrorCode::InvalidArgument, pre + where + ": routing weight is not finite (" + std::to_string(topk.weights[i]) + ")");
  }
}

}  // namespace mxmoe::reference::detail
