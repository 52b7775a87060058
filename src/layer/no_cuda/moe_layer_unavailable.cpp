// The layer in a build without nvcc: every entry point says plainly that no GPU backend exists.
#include "mxmoe/error.hpp"
#include "mxmoe/moe_layer.hpp"

namespace mxmoe {

struct MoeLayer::Impl {};

bool cuda_backend_compiled() { return false; }

DeviceCheck check_hopper_device(int) { return {false, "this build of mxmoe has no CUDA backend (nvcc was not found at build time)"}; }

MoeLayer::MoeLayer(const CanonicalMoeWeights& weights, const MoeLayerOptions& options) {
  validate_layer_formats(weights.format);
  fail(ErrorCode::Unsupported, check_hopper_device(options.device).message);
}
MoeLayer::~MoeLayer() = default;
void MoeLayer::forward(const void*, const std::int32_t*, const float*, void*, int, cudaStream_t) const {}
void MoeLayer::forward_from_logits(const void*, const float*, const RoutingConfig&, void*, int, cudaStream_t) const {}
int MoeLayer::hidden() const { return 0; }
int MoeLayer::inter() const { return 0; }
int MoeLayer::num_experts() const { return 0; }
int MoeLayer::max_tokens() const { return 0; }
float MoeLayer::prepare_ms() const { return 0.0f; }
const char* MoeLayer::gemm_format() const { return "none"; }
std::string MoeLayer::gemm_plan_for(int) const { return {}; }
std::size_t MoeLayer::device_bytes() const { return 0; }
W4a8FoldReport MoeLayer::w4a8_fold() const { return {}; }

}  // namespace mxmoe
