// Router logits [T, E] = hidden (bf16, or fp16 when the weights' format says so) x router_weight^T
// (+ logit bias), fp32 accumulation.
#include <string>
#include <vector>

#include "formats/bf16.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/reference.hpp"
#include "reference/parallel.hpp"
#include "reference/row_math.hpp"

namespace mxmoe::reference {

std::vector<float> router_logits(const CanonicalMoeWeights& w, const std::uint16_t* hidden, int num_tokens,
                                 const float* logit_bias) {
  const char* pre = "reference::router_logits: ";
  if (!w.router_weight) fail(ErrorCode::NotFound, std::string(pre) + "the weights have no router_weight");
  const int E = w.num_experts, H = w.hidden;
  const HostTensor& r = *w.router_weight;
  if (E <= 0 || H <= 0) fail(ErrorCode::Shape, std::string(pre) + "E and H must be positive, got E=" + std::to_string(E) + " H=" + std::to_string(H));
  if (r.dtype() != DType::F32)
    fail(ErrorCode::DType, std::string(pre) + "router_weight has dtype " + dtype_name(r.dtype()) + ", expected F32");
  if (r.shape() != Shape{E, H})
    fail(ErrorCode::Shape, std::string(pre) + "router_weight has shape " + shape_str(r.shape()) + ", expected " + shape_str({E, H}));
  if (num_tokens < 0) fail(ErrorCode::InvalidArgument, std::string(pre) + "num_tokens must be >= 0, got " + std::to_string(num_tokens));
  if (num_tokens > 0 && hidden == nullptr) fail(ErrorCode::InvalidArgument, std::string(pre) + "hidden is a null pointer");

  std::vector<float> logits(static_cast<std::size_t>(num_tokens) * E);
  const float* rw = r.as<float>();
  const int workers = detail::resolve_threads(0);
  std::vector<std::vector<float>> x(static_cast<std::size_t>(workers), std::vector<float>(static_cast<std::size_t>(H)));
  detail::parallel_for(num_tokens, workers, [&](std::int64_t t, int worker) {
    float* xt = x[static_cast<std::size_t>(worker)].data();
    for (int h = 0; h < H; ++h) xt[h] = detail::act_to_float(hidden[t * H + h], w.format.activation_dtype);
    for (int e = 0; e < E; ++e) {
      const float dot = detail::dot(rw + static_cast<std::size_t>(e) * H, xt, H);
      logits[static_cast<std::size_t>(t) * E + e] = logit_bias ? dot + logit_bias[e] : dot;
    }
  });
  return logits;
}

}  // namespace mxmoe::reference
