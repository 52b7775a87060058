// The C ABI's device half in a build without nvcc: every entry says so.
#include "capi/internal.hpp"

using namespace mxmoe;
using capi::guarded;

namespace {
[[noreturn]] void no_cuda(const char* entry) {
  fail(ErrorCode::Unsupported, std::string(entry) + ": this build of mxmoe has no CUDA backend (nvcc was not found at build time)");
}
}  // namespace

extern "C" {
int mxmoe_cuda_compiled(void) { return 0; }
int mxmoe_check_device(int) { return guarded("mxmoe_check_device", [] { no_cuda("mxmoe_check_device"); }); }
int mxmoe_tile_experts_cuda(const uint8_t*, const uint8_t*, int, int, int, int, int, int, uint8_t*, uint8_t*, void*) {
  return guarded("mxmoe_tile_experts_cuda", [] { no_cuda("mxmoe_tile_experts_cuda"); });
}
int mxmoe_tile_experts_w4a8_cuda(const uint8_t*, const uint8_t*, int, int, int, int, uint8_t*, uint8_t*, float*, int32_t*, void*) {
  return guarded("mxmoe_tile_experts_w4a8_cuda", [] { no_cuda("mxmoe_tile_experts_w4a8_cuda"); });
}
int mxmoe_workspace_bytes(int, int, int, int, int, int64_t*) {
  return guarded("mxmoe_workspace_bytes", [] { no_cuda("mxmoe_workspace_bytes"); });
}
int mxmoe_workspace_bytes_fp8(int, int, int, int, int, int64_t*) {
  return guarded("mxmoe_workspace_bytes_fp8", [] { no_cuda("mxmoe_workspace_bytes_fp8"); });
}
int mxmoe_forward_cuda(const mxmoe_weights*, const mxmoe_activation*, const void*, const int32_t*, const float*, void*, int, int,
                       void*, int64_t, void*, int) {
  return guarded("mxmoe_forward_cuda", [] { no_cuda("mxmoe_forward_cuda"); });
}
int mxmoe_route_cuda(const float*, const float*, int, int, const mxmoe_routing*, int32_t*, float*, void*) {
  return guarded("mxmoe_route_cuda", [] { no_cuda("mxmoe_route_cuda"); });
}
}  // extern "C"
