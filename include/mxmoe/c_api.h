/* mxmoe's C ABI: what the Python package (python/mxmoe) binds with ctypes, and what any other
 * language or engine can bind. Plain C types only, so one build serves every PyTorch version: the
 * caller owns all memory (torch tensors, say) and passes pointers and the CUDA stream.
 *
 * Every function returning int returns 0 on success, or an mxmoe error code + 1 (MXMOE_E_*) with
 * the message in mxmoe_last_error() (per thread, valid until the next failing call).
 * Layouts are those of include/mxmoe/weights.hpp (canonical) and src/kernels/tile_layout.hpp
 * (prepared, "tiled"). */
#ifndef MXMOE_C_API_H
#define MXMOE_C_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MXMOE_C_ABI_VERSION 6 /* 3: MXFP4 weights may carry E8M0 shift factors (mxmoe_weights);
                                * 4: those factors are per weight row, [E, 2I] and [E, H];
                                * 5: mxmoe_forward_cuda takes batch_invariant;
                                * 6: W4A8 (FP8 per-token activations): mxmoe_weights.fp8_activations,
                                *    mxmoe_tile_experts_w4a8_cuda, mxmoe_workspace_bytes_fp8 */

enum {
  MXMOE_OK = 0,
  MXMOE_E_INVALID_ARGUMENT = 1,
  MXMOE_E_SHAPE = 2,
  MXMOE_E_DTYPE = 3,
  MXMOE_E_FORMAT = 4,
  MXMOE_E_IO = 5,
  MXMOE_E_NOT_FOUND = 6,
  MXMOE_E_UNSUPPORTED = 7,
  MXMOE_E_CUDA = 8,
  MXMOE_E_INTERNAL = 9
};

int mxmoe_c_abi_version(void);
const char* mxmoe_last_error(void);
/* 1 when this build contains the Hopper kernels. */
int mxmoe_cuda_compiled(void);
/* 0 when `device` is a Hopper GPU the kernels run on; otherwise the error names the device. */
int mxmoe_check_device(int device);

/* Weights of every expert of one layer, all in one place (host for the CPU functions, one device
 * for the CUDA ones), in one of two formats (include/mxmoe/weights.hpp):
 *   MXFP4 (group 32): scales E8M0 bytes (every byte 0x00..0xFE; 0xFF is NaN), bf16 activations.
 *   NVFP4 (group 16): scales UE4M3 bytes (E4M3 with the sign bit clear; 0x7F is NaN), plus the
 *     global scales fp32 w13_global_scale [E, 2] (column 0 the gate rows, 1 the up rows) and
 *     w2_global_scale [E]; bf16 or fp16 activations (f16_activations).
 * Canonical: w13 [E, 2I, H/2], w13_scale [E, 2I, H/group], w2 [E, H, I/2], w2_scale [E, H, I/group].
 * Prepared: the tiled bytes of mxmoe_prepared_bytes per expert. Biases fp32 [E, 2I] and [E, H],
 * canonical order, or NULL. A row's output is global x fp32 dot(e2m1 x scale, x), then the bias.
 * W4A8 (fp8_activations = 1; MXFP4 with bf16 hidden states only): the activations are quantised per
 * row to E4M3 inside the forward (include/mxmoe/reference.hpp, ActivationPrecision::Fp8PerToken: each
 * token's hidden row and each (token, slot) bf16 intermediate row, scale amax / 448) and the weights
 * run folded to E4M3 x 2^base per row. */
typedef struct {
  const void* w13;
  const void* w13_scale;
  const void* w2;
  const void* w2_scale;
  const float* w13_bias;
  const float* w2_bias;
  const float* w13_global_scale; /* NVFP4: fp32 [E, 2]; MXFP4: NULL, or the shift factors [E, 2I] (below) */
  const float* w2_global_scale;  /* NVFP4: fp32 [E]; MXFP4: NULL, or the shift factors [E, H] (below) */
  int num_experts, hidden, inter;
  int group;           /* 32 (MXFP4) or 16 (NVFP4) */
  int f16_activations; /* 1: hidden, intermediate and out are fp16 (NVFP4 only); 0: bf16 */
  int max_scale_byte;  /* MXFP4: the largest E8M0 byte of both scale tensors as passed (0..254), which
                        * picks the kernels' scale arithmetic; a value below the true largest byte gives
                        * wrong results on the GPU. NVFP4: ignored.
                        * MXFP4 scales with bytes above 128 run fastest prepared with a shift (the torch
                        * package's prepare does it): per expert and weight row (canonical order: w13's
                        * 2I rows, gate rows then up rows; w2's H rows) with largest byte m,
                        * d = max(0, m - 128), the row's bytes passed as b - d (all within 0..128, so
                        * max_scale_byte <= 128; a row spanning more than 128 bytes cannot be shifted)
                        * and the factors 2^d in w13_global_scale fp32 [E, 2I] and w2_global_scale fp32
                        * [E, H] (device, E x (2I + H) x 4 bytes); the forward multiplies each row's dot
                        * products by its factor. Without factors,
                        * bytes above 128 take one more multiply per weight register (slower). The CPU
                        * oracle (mxmoe_forward_cpu) takes canonical bytes, no factors.
                        * W4A8 (fp8_activations): ignored (the W4A8 tile layout takes every byte). */
  int fp8_activations; /* ABI 6. 1: W4A8, FP8 (E4M3) per-token activations; MXFP4 (group 32) with bf16
                        * hidden states only (NVFP4 is refused as unsupported, f16_activations as a dtype
                        * error). mxmoe_forward_cuda: w13/w13_scale/w2/w2_scale from
                        * mxmoe_tile_experts_w4a8_cuda, its row factors 2^base in w13_global_scale fp32
                        * [E, 2I] and w2_global_scale fp32 [E, H] (device, both required), a workspace of
                        * mxmoe_workspace_bytes_fp8. mxmoe_forward_cpu: the oracle's
                        * FP8 mode on canonical weights (it folds them itself; no factors: both global
                        * scale pointers NULL). 0: bf16/fp16 activations, everything as before. */
} mxmoe_weights;

/* kind: 0 silu(g)*u, 1 DeepSeek V4 clamped silu (limit), 2 gpt-oss SwiGLU (alpha, limit). */
typedef struct {
  int kind;
  float limit;
  float alpha;
} mxmoe_activation;

/* mode: 0 softmax, 1 softmax over the top-k logits (gpt-oss), 2 DeepSeek V3 grouped sigmoid,
 * 3 DeepSeek V4 sqrt-softplus; see include/mxmoe/config.hpp. */
typedef struct {
  int mode;
  int top_k;
  int renormalize;
  int n_groups;
  int topk_groups;
  float routed_scaling;
} mxmoe_routing;

/* Checks shapes, the group, the activation (may be NULL) and what the kernels need: group 32 or 16,
 * H and I multiples of the group (hence of 16 rows). */
int mxmoe_check_problem(int num_experts, int hidden, int inter, int group, int top_k, const mxmoe_activation* act);

/* Bytes of one expert's prepared weight matrix (rows x k, quantisation group 32 or 16) and its
 * scales. rows % 16 == 0, k % group == 0. */
int mxmoe_prepared_bytes(int rows, int k, int group, int64_t* weight_bytes, int64_t* scale_bytes);

/* fp32 scales of shape [shape[0], ..., shape[rank-1]] (exact powers of two) -> E8M0 bytes; the error
 * names `name`, the index and the value. */
int mxmoe_scales_to_e8m0(const float* scales, uint8_t* out, const int64_t* shape, int rank, const char* name);

/* Device: tiles `num_experts` consecutive canonical matrices (scales [rows, k/group]) into prepared
 * bytes (out of place). group 32 (E8M0 scales) or 16 (UE4M3 scales); f16 1: the fp16 bit placement
 * (NVFP4 weights that will run fp16 activations, and then only those), 0: the bf16 one. */
int mxmoe_tile_experts_cuda(const uint8_t* weights, const uint8_t* scales, int rows, int k, int gate_up, int group,
                            int f16, int num_experts, uint8_t* tiled_weights, uint8_t* tiled_scales, void* stream);

/* W4A8 (ABI 6), device: tiles `num_experts` consecutive canonical MXFP4 matrices (weights [rows, k/2],
 * E8M0 scales [rows, k/32], every byte 0x00..0xFE) into the W4A8 tile layout: tiled_weights and
 * tiled_scales of mxmoe_prepared_bytes(rows, k, 32) bytes per expert (the scales' place holds per
 * (row, group) table indices), and each row's factor 2^base into row_factor fp32 [num_experts, rows]
 * (canonical row order; what mxmoe_weights' w13_global_scale / w2_global_scale carry for W4A8).
 * bases_scratch: int32 [num_experts, rows], overwritten. All device pointers, on `stream`. */
int mxmoe_tile_experts_w4a8_cuda(const uint8_t* weights, const uint8_t* scales, int rows, int k, int gate_up,
                                 int num_experts, uint8_t* tiled_weights, uint8_t* tiled_scales, float* row_factor,
                                 int32_t* bases_scratch, void* stream);

/* Device workspace bytes of one forward of `num_tokens` tokens (bf16 or fp16 activations). */
int mxmoe_workspace_bytes(int num_experts, int hidden, int inter, int num_tokens, int top_k, int64_t* bytes);
/* The same for W4A8 (mxmoe_weights.fp8_activations = 1; ABI 6): larger, as it also holds the E4M3 rows
 * of the hidden states and of the intermediate and their scales. */
int mxmoe_workspace_bytes_fp8(int num_experts, int hidden, int inter, int num_tokens, int top_k, int64_t* bytes);

/* The fused forward on the device, prepared weights: hidden [T, H] bf16 (fp16 when
 * w->f16_activations), ids int32 [T, k] (-1 or >= E: skipped), weights fp32 [T, k], out [T, H] as
 * hidden; no host synchronisation, graph-capturable. The global scales are device pointers.
 * batch_invariant 1: a token's output bit-identical whatever batch it rides in (MoeLayerOptions::
 * batch_invariant: mma.sync only, no K split); 0: the fastest kernels. W4A8 (w->fp8_activations):
 * FP8 MMAs on the same plan (batch_invariant too); workspace_bytes from mxmoe_workspace_bytes_fp8. */
int mxmoe_forward_cuda(const mxmoe_weights* w, const mxmoe_activation* act, const void* hidden, const int32_t* ids,
                       const float* topk_weights, void* out, int num_tokens, int top_k, void* workspace,
                       int64_t workspace_bytes, void* stream, int batch_invariant);

/* Routing on the device: logits fp32 [T, E], correction bias fp32 [E] or NULL -> ids, weights [T, k]. */
int mxmoe_route_cuda(const float* logits, const float* correction_bias, int num_tokens, int num_experts,
                     const mxmoe_routing* routing, int32_t* ids, float* weights, void* stream);

/* The CPU oracle (include/mxmoe/reference.hpp), canonical weights in host memory (validated: every
 * scale byte, the global scales). hidden and out are bf16 bits, or fp16 bits when
 * w->f16_activations. ids outside -1..E-1 are an error. threads = 0: all cores.
 * w->fp8_activations: the oracle's FP8 mode (ActivationPrecision::Fp8PerToken), canonical MXFP4
 * weights without factors; results do not depend on batching, so it is batch-invariant too. */
int mxmoe_forward_cpu(const mxmoe_weights* w, const mxmoe_activation* act, const uint16_t* hidden, const int32_t* ids,
                      const float* topk_weights, uint16_t* out, int num_tokens, int top_k, int threads);
int mxmoe_route_cpu(const float* logits, const float* correction_bias, int num_tokens, int num_experts,
                    const mxmoe_routing* routing, int32_t* ids, float* weights);

/* A checkpoint's MoE layer through the C++ loader (every naming; MXFP4 with fp32 or E8M0 scales,
 * NVFP4 with UE4M3 scales and global scales). */
typedef struct mxmoe_layer mxmoe_layer;
int mxmoe_layer_open(const char* path, int layer, mxmoe_layer** out);
/* E, H, I, and which optional tensors exist (w13_bias, w2_bias, router_weight, correction_bias,
 * router_logit_bias), each 0 or 1. */
int mxmoe_layer_shape(const mxmoe_layer* l, int* num_experts, int* hidden, int* inter, int* has_optional);
/* The layer's quantisation group: 32 (MXFP4: E8M0 scales) or 16 (NVFP4: UE4M3 scales, with the
 * roles "w13_global_scale" fp32 [E, 2] and "w2_global_scale" fp32 [E]). */
int mxmoe_layer_format(const mxmoe_layer* l, int* group);
/* Copies one canonical tensor ("w13", "w13_scale", "w2", "w2_scale", "w13_global_scale",
 * "w2_global_scale", "w13_bias", "w2_bias", "router_weight", "correction_bias", "router_logit_bias")
 * into `dst`, which holds `bytes` bytes. */
int mxmoe_layer_copy(const mxmoe_layer* l, const char* role, void* dst, int64_t bytes);
/* Bytes of that tensor (0 when absent). */
int64_t mxmoe_layer_bytes(const mxmoe_layer* l, const char* role);
/* The layout's name ("dsv4", "fused", "gpt-oss", ...), the format (MXFP4 or NVFP4) and the scale
 * format, valid while `l` lives. */
const char* mxmoe_layer_description(const mxmoe_layer* l);
void mxmoe_layer_close(mxmoe_layer* l);

/* The checkpoint names the fused layout accepts for a canonical role ("w13", "w13_scale", "w13_bias",
 * "w2", "w2_scale", "w2_bias", and the NVFP4 global scales where the table has them),
 * comma-separated, relative to "<module>.experts.", from the one alias table of the C++ loader;
 * MXMOE_E_NOT_FOUND + 1 for a role the fused layout lacks. */
int mxmoe_fused_aliases(const char* role, char* out, int64_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* MXMOE_C_API_H */
