// The fused MoE layer on a Hopper GPU (sm_90a): prepared MXFP4 or NVFP4 expert weights, all workspace
// allocated at creation, a forward that never synchronises the host (CUDA-graph capturable).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "mxmoe/config.hpp"
#include "mxmoe/weights.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace mxmoe {

struct MoeLayerOptions {
  int max_tokens = 1;  // the largest T any forward will be given
  int top_k = 1;
  ActivationConfig activation;
  int device = 0;
  GemmTile gemm_tile = GemmTile::Auto;
  // A token's output bit-identical whatever batch it rides in (same weights, same routing of that
  // token): the GEMMs stay on mma.sync (no wgmma path, no K split for one or two tokens;
  // kernels::choose_gemm says why). Costs nothing at 1 and 2 tokens and the wgmma path's lead from 36
  // routed pairs per expert up: 1.6x at 4096 and 16384 tokens on dsv4-flash
  // (bench/results/20261130-1239-H200-session, mxmoe bench --batch-invariant).
  bool batch_invariant = false;
  // The activations the expert GEMMs take (issue 14). Bf16: W4A16, the default. Fp8PerToken: W4A8,
  // MXFP4 weights only: the weights are prepared folded to E4M3 (prepare/w4a8_fold.hpp's rule, exact
  // where a row's E8M0 bytes span at most 15 values, re-quantised below that), each token's hidden
  // row and each (token, slot)'s intermediate are quantised to E4M3 with a per-row scale, and both
  // GEMMs run FP8 MMAs (mma.sync m16n8k32 or warpgroup m64nNk32, chosen as for bf16);
  // reference::moe_forward with the same precision is the oracle.
  ActivationPrecision activation_precision = ActivationPrecision::Bf16;
};

// What the device can do for us: true with the device's name, or false and why not.
struct DeviceCheck {
  bool ok = false;
  std::string message;
};
DeviceCheck check_hopper_device(int device = 0);

// True when this build contains the CUDA backend at all.
bool cuda_backend_compiled();

class MoeLayer {
 public:
  // Validates the weights and options, checks the device (compute capability 9.0), uploads and
  // prepares the weights (one-time GPU repack) and allocates every buffer forward needs.
  MoeLayer(const CanonicalMoeWeights& weights, const MoeLayerOptions& options);
  ~MoeLayer();
  MoeLayer(const MoeLayer&) = delete;
  MoeLayer& operator=(const MoeLayer&) = delete;

  // Device pointers: hidden [T, H] in the weights' activation dtype (bf16; NVFP4 also fp16);
  // topk_ids int32 [T, k]; topk_weights fp32 [T, k]; out [T, H] as hidden. Ids of -1 or >= E
  // contribute nothing. 1 <= T <= max_tokens.
  void forward(const void* hidden, const std::int32_t* topk_ids, const float* topk_weights, void* out,
               int num_tokens, cudaStream_t stream) const;

  // As forward, but routes on the GPU from router logits fp32 [T, E]; correction bias from the
  // weights when the routing mode uses one. The chosen ids/weights land in the layer's workspace.
  void forward_from_logits(const void* hidden, const float* router_logits, const RoutingConfig& routing, void* out,
                           int num_tokens, cudaStream_t stream) const;

  int hidden() const;
  int inter() const;
  int num_experts() const;
  int max_tokens() const;
  float prepare_ms() const;  // GPU time of the one-time weight preparation
  // The kernels' weight format, chosen at construction (src/kernels/moe_gemm.hpp: GemmFormat):
  // "mxfp4", "mxfp4-shifted", "mxfp4-wide", "nvfp4-bf16", "nvfp4-f16" or "mxfp4-e4m3" (W4A8).
  const char* gemm_format() const;
  // The GEMM configurations a forward of `num_tokens` tokens runs: the option's, or auto's choice by
  // routed pairs per expert plus the wgmma lane for experts that hold more than one block
  // (src/kernels/moe_gemm.hpp: GemmLanes), e.g. "medium + wgmma from 33 pairs".
  std::string gemm_plan_for(int num_tokens) const;
  std::size_t device_bytes() const;
  // W4A8 (activation_precision Fp8PerToken): what its prepare re-quantised, per tensor (groups whose
  // E8M0 exponent lies more than 14 below their row's largest; w4a8_fold_report in weights.hpp).
  // All zero for bf16 activations.
  W4a8FoldReport w4a8_fold() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mxmoe
