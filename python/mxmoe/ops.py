"""The torch.ops.mxmoe operators (MXFP4 and NVFP4 weights): schemas, CPU (the oracle) and CUDA (the Hopper kernels)
implementations, and fake implementations so torch.compile(fullgraph=True) traces them.

Registered with torch.library, the Python face of TORCH_LIBRARY: the kernels live in libmxmoe_c, a
plain C library (include/mxmoe/c_api.h), so this package runs on every torch version >= 2.4 with no
rebuild. The CUDA implementations allocate only through torch (workspace = a uint8 tensor of the
caching allocator), never synchronise the host, and run on torch's current stream, so they can be
captured in a torch.cuda.CUDAGraph.

W4A8 (FP8 per-token activations, C ABI 6): fused_moe and fused_moe_from_logits take a trailing
`bool fp8=False` (old callers keep working); with it the CPU op runs the oracle's FP8 mode on canonical
MXFP4 weights and the CUDA op the W4A8 kernels on weights tiled by tile_experts_w4a8, whose row
factors 2^base ride in w13_global_scale / w2_global_scale."""
from __future__ import annotations

import ctypes

import torch

from . import _capi
from ._capi import Activation, Routing, Weights, check, lib

_lib = torch.library.Library("mxmoe", "DEF")
_lib.define(
    "fused_moe(Tensor hidden, Tensor w13, Tensor w13_scale, Tensor w2, Tensor w2_scale, Tensor? w13_bias, "
    "Tensor? w2_bias, Tensor? w13_global_scale, Tensor? w2_global_scale, Tensor topk_ids, Tensor topk_weights, "
    "int inter, int group, int max_scale_byte, int act_kind, float act_limit, float act_alpha, Tensor(a!) out, "
    "bool batch_invariant=False, bool fp8=False) -> ()")
_lib.define(
    "route(Tensor router_logits, Tensor? correction_bias, int routing_mode, int top_k, bool renormalize, int n_groups, "
    "int topk_groups, float routed_scaling) -> (Tensor, Tensor)")
_lib.define(
    "tile_experts(Tensor weights, Tensor scales, int rows, int k, bool gate_up, int group, Tensor(a!) tiled_weights, "
    "Tensor(b!) tiled_scales, bool f16=False) -> ()")
_lib.define(
    "tile_experts_w4a8(Tensor weights, Tensor scales, int rows, int k, bool gate_up, Tensor(a!) tiled_weights, "
    "Tensor(b!) tiled_scales, Tensor(c!) row_factor) -> ()")
_lib.define(
    "prepare(Tensor w13, Tensor w13_scale, Tensor w2, Tensor w2_scale, int group, bool f16=False) -> "
    "(Tensor, Tensor, Tensor, Tensor)")
_lib.define(
    "fused_moe_from_logits(Tensor hidden, Tensor w13, Tensor w13_scale, Tensor w2, Tensor w2_scale, "
    "Tensor? w13_bias, Tensor? w2_bias, Tensor? w13_global_scale, Tensor? w2_global_scale, Tensor router_logits, "
    "Tensor? correction_bias, int routing_mode, int top_k, bool renormalize, int n_groups, int topk_groups, "
    "float routed_scaling, int inter, int group, int max_scale_byte, int act_kind, float act_limit, float act_alpha, "
    "Tensor(a!) out, bool batch_invariant=False, bool fp8=False) -> ()")


def _ptr(t):
    return None if t is None else t.data_ptr()


_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(device: torch.device) -> int:
    """The handle of torch's current stream on `device` (the raw getter avoids a Stream object)."""
    if _raw_stream is not None:
        return _raw_stream(device.index if device.index is not None else torch.cuda.current_device())
    return torch.cuda.current_stream(device).cuda_stream


class _on_device:
    """Makes `device` current only when it is not already (switching costs a few microseconds)."""

    def __init__(self, device: torch.device):
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.guard = torch.cuda.device(index) if index != torch.cuda.current_device() else None

    def __enter__(self):
        if self.guard is not None:
            self.guard.__enter__()

    def __exit__(self, *exc):
        if self.guard is not None:
            self.guard.__exit__(*exc)


def _weights(w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale, hidden, inter,
             group, max_scale_byte, fp8=False) -> Weights:
    return Weights(_ptr(w13), _ptr(w13_scale), _ptr(w2), _ptr(w2_scale), _ptr(w13_bias), _ptr(w2_bias),
                   _ptr(w13_global_scale), _ptr(w2_global_scale), w13.shape[0], hidden.shape[1], inter, group,
                   int(hidden.dtype == torch.float16), max_scale_byte, int(fp8))


# ---------------------------------------------------------------------------------------- fused_moe
# hidden and out: bf16, or fp16 with NVFP4 (group 16); the scales uint8 (E8M0 or UE4M3 bytes); the
# global scales: NVFP4's fp32 [E, 2] and [E], or the per-row 2^d factors fp32 [E, 2I] and [E, H] of MXFP4
# scales prepared with a shift (CUDA only; _prepare.e8m0_shifts), or None; max_scale_byte: MXFP4's
# largest E8M0 byte as passed. batch_invariant: a token's output bit-identical in any batch (the CPU
# oracle is so by construction: each (token, expert) dot product is summed on its own). fp8: W4A8
# (MXFP4, bf16 hidden): on the CPU canonical weights and no global scales; on CUDA the W4A8 tile layout
# with its row factors 2^base as the global scales.
def _fused_moe_cpu(hidden, w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale,
                   topk_ids, topk_weights, inter, group, max_scale_byte, act_kind, act_limit, act_alpha, out,
                   batch_invariant=False, fp8=False):
    T = hidden.shape[0]
    w = _weights(w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale, hidden, inter,
                 group, max_scale_byte, fp8)
    act = Activation(act_kind, act_limit, act_alpha)
    result = out if out.is_contiguous() else torch.empty_like(out, memory_format=torch.contiguous_format)
    if T:
        check(lib.mxmoe_forward_cpu(ctypes.byref(w), ctypes.byref(act), hidden.data_ptr(), topk_ids.data_ptr(),
                                    topk_weights.data_ptr(), result.data_ptr(), T, topk_ids.shape[1], 0))
    if result is not out:
        out.copy_(result)


def _fused_moe_cuda(hidden, w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale,
                    topk_ids, topk_weights, inter, group, max_scale_byte, act_kind, act_limit, act_alpha, out,
                    batch_invariant=False, fp8=False):
    T, H = hidden.shape
    if T == 0:
        return
    k = topk_ids.shape[1]
    w = _weights(w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale, hidden, inter,
                 group, max_scale_byte, fp8)
    act = Activation(act_kind, act_limit, act_alpha)
    nbytes = ctypes.c_int64()
    workspace_bytes = lib.mxmoe_workspace_bytes_fp8 if fp8 else lib.mxmoe_workspace_bytes
    check(workspace_bytes(w.num_experts, H, inter, T, k, ctypes.byref(nbytes)))
    workspace = torch.empty(nbytes.value, dtype=torch.uint8, device=hidden.device)
    with _on_device(hidden.device):
        check(lib.mxmoe_forward_cuda(ctypes.byref(w), ctypes.byref(act), hidden.data_ptr(), topk_ids.data_ptr(),
                                     topk_weights.data_ptr(), out.data_ptr(), T, k, workspace.data_ptr(),
                                     nbytes.value, _stream(hidden.device), int(batch_invariant)))


_lib.impl("fused_moe", _fused_moe_cpu, "CPU")
_lib.impl("fused_moe", _fused_moe_cuda, "CUDA")


@torch.library.register_fake("mxmoe::fused_moe")
def _fused_moe_fake(*args):
    return None


# -------------------------------------------------------------------------------------------- route
def _routing(mode, top_k, renormalize, n_groups, topk_groups, routed_scaling) -> Routing:
    return Routing(mode, top_k, int(renormalize), n_groups, topk_groups, routed_scaling)


def _route_cpu(router_logits, correction_bias, mode, top_k, renormalize, n_groups, topk_groups, routed_scaling):
    T, E = router_logits.shape
    ids = torch.empty(T, top_k, dtype=torch.int32)
    weights = torch.empty(T, top_k, dtype=torch.float32)
    r = _routing(mode, top_k, renormalize, n_groups, topk_groups, routed_scaling)
    if T:
        check(lib.mxmoe_route_cpu(router_logits.data_ptr(), _ptr(correction_bias), T, E, ctypes.byref(r),
                                  ids.data_ptr(), weights.data_ptr()))
    return ids, weights


def _route_cuda(router_logits, correction_bias, mode, top_k, renormalize, n_groups, topk_groups, routed_scaling):
    T, E = router_logits.shape
    dev = router_logits.device
    ids = torch.empty(T, top_k, dtype=torch.int32, device=dev)
    weights = torch.empty(T, top_k, dtype=torch.float32, device=dev)
    r = _routing(mode, top_k, renormalize, n_groups, topk_groups, routed_scaling)
    if T:
        with _on_device(dev):
            check(lib.mxmoe_route_cuda(router_logits.data_ptr(), _ptr(correction_bias), T, E, ctypes.byref(r),
                                       ids.data_ptr(), weights.data_ptr(), _stream(dev)))
    return ids, weights


_lib.impl("route", _route_cpu, "CPU")
_lib.impl("route", _route_cuda, "CUDA")


@torch.library.register_fake("mxmoe::route")
def _route_fake(router_logits, correction_bias, mode, top_k, renormalize, n_groups, topk_groups, routed_scaling):
    T = router_logits.shape[0]
    return (router_logits.new_empty((T, top_k), dtype=torch.int32),
            router_logits.new_empty((T, top_k), dtype=torch.float32))


# ------------------------------------------------------------------------------------- tile_experts
def _tile_experts_cuda(weights, scales, rows, k, gate_up, group, tiled_weights, tiled_scales, f16=False):
    with _on_device(weights.device):
        check(lib.mxmoe_tile_experts_cuda(weights.data_ptr(), scales.data_ptr(), rows, k, int(gate_up), group,
                                          int(f16), weights.shape[0], tiled_weights.data_ptr(), tiled_scales.data_ptr(),
                                          _stream(weights.device)))


def _tile_experts_cpu(weights, scales, rows, k, gate_up, group, tiled_weights, tiled_scales, f16=False):
    raise _capi.UnsupportedError("mxmoe::tile_experts: the tile layout is for the CUDA kernels; the CPU backend "
                                 "runs on canonical weights")


_lib.impl("tile_experts", _tile_experts_cuda, "CUDA")
_lib.impl("tile_experts", _tile_experts_cpu, "CPU")


@torch.library.register_fake("mxmoe::tile_experts")
def _tile_experts_fake(weights, scales, rows, k, gate_up, group, tiled_weights, tiled_scales, f16=False):
    return None


# W4A8: canonical MXFP4 [E, rows, k/2] + E8M0 bytes [E, rows, k/32] -> the W4A8 tile layout (the byte
# sizes of tile_experts with group 32) and each row's factor 2^base, fp32 row_factor [E, rows].
def _tile_experts_w4a8_cuda(weights, scales, rows, k, gate_up, tiled_weights, tiled_scales, row_factor):
    bases = torch.empty(weights.shape[0], rows, dtype=torch.int32, device=weights.device)  # the C ABI's scratch
    with _on_device(weights.device):
        check(lib.mxmoe_tile_experts_w4a8_cuda(weights.data_ptr(), scales.data_ptr(), rows, k, int(gate_up),
                                               weights.shape[0], tiled_weights.data_ptr(), tiled_scales.data_ptr(),
                                               row_factor.data_ptr(), bases.data_ptr(), _stream(weights.device)))


def _tile_experts_w4a8_cpu(weights, scales, rows, k, gate_up, tiled_weights, tiled_scales, row_factor):
    raise _capi.UnsupportedError("mxmoe::tile_experts_w4a8: the W4A8 tile layout is for the CUDA kernels; the CPU "
                                 "oracle folds canonical weights itself")


_lib.impl("tile_experts_w4a8", _tile_experts_w4a8_cuda, "CUDA")
_lib.impl("tile_experts_w4a8", _tile_experts_w4a8_cpu, "CPU")


@torch.library.register_fake("mxmoe::tile_experts_w4a8")
def _tile_experts_w4a8_fake(weights, scales, rows, k, gate_up, tiled_weights, tiled_scales, row_factor):
    return None


# ------------------------------------------------------------------------------------------ prepare
# Canonical uint8 tensors (E8M0 or UE4M3 scale bytes, group 32 or 16) -> what the device's backend
# runs: new tensors, the arguments untouched. CPU: the canonical bytes (the oracle's input); CUDA:
# the tile layout.
def _prepare_cpu(w13, w13_scale, w2, w2_scale, group, f16=False):
    return w13.clone(), w13_scale.clone(), w2.clone(), w2_scale.clone()


def prepared_bytes(rows: int, k: int, group: int = 32):
    """Bytes of one expert's prepared weight matrix (rows x k, quantisation group 32 or 16) and of its scales."""
    wb, sb = ctypes.c_int64(), ctypes.c_int64()
    check(lib.mxmoe_prepared_bytes(rows, k, group, ctypes.byref(wb), ctypes.byref(sb)))
    return wb.value, sb.value


def _prepare_shapes(w13, w2, group):
    E, two_i, half_h = w13.shape
    I, H = two_i // 2, half_h * 2
    return E, prepared_bytes(2 * I, H, group), prepared_bytes(H, I, group)


def _prepare_cuda(w13, w13_scale, w2, w2_scale, group, f16=False):
    E, (wb13, sb13), (wb2, sb2) = _prepare_shapes(w13, w2, group)
    I, H = w13.shape[1] // 2, w13.shape[2] * 2
    out = [torch.empty(E, n, dtype=torch.uint8, device=w13.device) for n in (wb13, sb13, wb2, sb2)]
    _tile_experts_cuda(w13, w13_scale, 2 * I, H, True, group, out[0], out[1], f16)
    _tile_experts_cuda(w2, w2_scale, H, I, False, group, out[2], out[3], f16)
    return tuple(out)


_lib.impl("prepare", _prepare_cpu, "CPU")
_lib.impl("prepare", _prepare_cuda, "CUDA")


@torch.library.register_fake("mxmoe::prepare")
def _prepare_fake(w13, w13_scale, w2, w2_scale, group, f16=False):
    if w13.device.type == "cpu":
        return tuple(torch.empty_like(t) for t in (w13, w13_scale, w2, w2_scale))
    E, (wb13, sb13), (wb2, sb2) = _prepare_shapes(w13, w2, group)
    return tuple(w13.new_empty((E, n)) for n in (wb13, sb13, wb2, sb2))


# ---------------------------------------------------------------------------- fused_moe_from_logits
def _from_logits(route_impl, forward_impl):
    def impl(hidden, w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale,
             router_logits, correction_bias, mode, top_k, renormalize, n_groups, topk_groups, routed_scaling, inter,
             group, max_scale_byte, act_kind, act_limit, act_alpha, out, batch_invariant=False, fp8=False):
        ids, weights = route_impl(router_logits, correction_bias, mode, top_k, renormalize, n_groups, topk_groups,
                                  routed_scaling)
        forward_impl(hidden, w13, w13_scale, w2, w2_scale, w13_bias, w2_bias, w13_global_scale, w2_global_scale, ids,
                     weights, inter, group, max_scale_byte, act_kind, act_limit, act_alpha, out, batch_invariant, fp8)
    return impl


_lib.impl("fused_moe_from_logits", _from_logits(_route_cpu, _fused_moe_cpu), "CPU")
_lib.impl("fused_moe_from_logits", _from_logits(_route_cuda, _fused_moe_cuda), "CUDA")


@torch.library.register_fake("mxmoe::fused_moe_from_logits")
def _fused_moe_from_logits_fake(*args):
    return None
