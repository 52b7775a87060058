"""Weight preparation: canonical MXFP4 tensors -> what the backend of their device runs.

Canonical fused layout (include/mxmoe/weights.hpp): w13 uint8/int8 [E, 2I, H/2] (gate rows, then up
rows; low nibble = even element), w2 [E, H, I/2], scales E8M0 bytes or float powers of two
[E, rows, K/32], biases [E, 2I] and [E, H]. On the CPU the oracle runs on the canonical tensors
(scales as E8M0 bytes, biases fp32). On a Hopper GPU the weights are tiled for the kernels
(src/kernels/tile_layout.hpp); with inplace=True the tiling overwrites the canonical storage a group
of experts at a time, so the peak extra memory is one staging group, not a second layer."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Optional

import torch

from . import _checks, ops  # noqa: F401  (ops registers torch.ops.mxmoe)
from ._capi import FormatError, UnsupportedError, check, lib

_STAGE_BYTES = 256 << 20  # staging of in-place tiling


@dataclass
class PreparedWeights:
    """Weights ready for fused_moe; torch owns every tensor. layout: 'canonical' (CPU) or 'tiled' (CUDA)."""

    w13: torch.Tensor
    w13_scale: torch.Tensor
    w2: torch.Tensor
    w2_scale: torch.Tensor
    w13_bias: Optional[torch.Tensor]
    w2_bias: Optional[torch.Tensor]
    num_experts: int
    hidden_size: int
    intermediate_size: int
    layout: str

    @property
    def device(self) -> torch.device:
        return self.w13.device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.w13, self.w13_scale, self.w2, self.w2_scale,
                                                           self.w13_bias, self.w2_bias) if t is not None)


def scales_to_e8m0(scales: torch.Tensor, name: str) -> torch.Tensor:
    """E8M0 bytes (uint8, same device) of scales given as bytes or as exact float powers of two."""
    if scales.dtype == torch.uint8 or str(scales.dtype) == "torch.float8_e8m0fnu":
        b = scales.view(torch.uint8) if scales.dtype != torch.uint8 else scales
        nan = b == 0xFF
        if bool(nan.any()):
            raise FormatError(f"{name}: the E8M0 NaN byte 0xFF at index {_checks.first_index(nan)}")
        return b.contiguous()
    src = scales.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty(src.shape, dtype=torch.uint8)
    shape = (ctypes.c_int64 * src.dim())(*src.shape)
    check(lib.mxmoe_scales_to_e8m0(src.data_ptr(), out.data_ptr(), shape, src.dim(), name.encode()))
    return out.to(scales.device)


def _check_kernel_scale_range(s: torch.Tensor, name: str):
    limit = lib.mxmoe_max_kernel_scale_byte()
    high = s > limit
    if bool(high.any()):
        index = _checks.first_index(high)
        byte = int(s[tuple(index)])
        raise UnsupportedError(f"{name}: scale byte {byte} (2^{byte - 127}) at [expert, row, group] {index}; the "
                               f"Hopper kernels accept E8M0 bytes up to {limit} (scale 2^{limit - 127})")


def _tile(w: torch.Tensor, s: torch.Tensor, rows: int, k: int, gate_up: bool, inplace: bool):
    """Canonical [E, rows, k/2] + [E, rows, k/32] -> tiled [E, wb] + [E, sb] on w's device."""
    E = w.shape[0]
    wb, sb = ops.prepared_bytes(rows, k)
    if inplace and wb == rows * k // 2 and sb == rows * k // 32:
        # Same bytes per expert (K a multiple of 64): tile each staging group back into its own storage.
        per_expert = wb + sb
        group = max(1, min(E, _STAGE_BYTES // per_expert))
        for e0 in range(0, E, group):
            e1 = min(E, e0 + group)
            torch.ops.mxmoe.tile_experts(w[e0:e1].clone(), s[e0:e1].clone(), rows, k, gate_up, w[e0:e1], s[e0:e1])
        return w.view(E, wb), s.view(E, sb)
    tw = torch.empty(E, wb, dtype=torch.uint8, device=w.device)
    ts = torch.empty(E, sb, dtype=torch.uint8, device=w.device)
    torch.ops.mxmoe.tile_experts(w, s, rows, k, gate_up, tw, ts)
    return tw, ts



def prepare(w13, w13_scale, w2, w2_scale, w13_bias=None, w2_bias=None, *, inplace: bool = False) -> PreparedWeights:
    """Prepares canonical MXFP4 expert weights for fused_moe on their device (CPU or a Hopper GPU).

    inplace=False leaves the arguments untouched. inplace=True lets preparation reuse their storage
    (the tensors' contents are then the prepared bytes): what an engine does once after loading."""
    _checks.tensor(w13, "w13", (torch.uint8, torch.int8), ndim=3)
    E, two_i, half_h = w13.shape
    I, H = two_i // 2, half_h * 2
    _checks.tensor(w2, "w2", (torch.uint8, torch.int8), shape=(E, H, I // 2))
    check(lib.mxmoe_check_problem(E, H, I, 1, None))
    _checks.tensor(w13_scale, "w13_scale", _checks.SCALE_DTYPES, shape=(E, 2 * I, H // 32))
    _checks.tensor(w2_scale, "w2_scale", _checks.SCALE_DTYPES, shape=(E, H, I // 32))
    if w13_bias is not None:
        _checks.tensor(w13_bias, "w13_bias", _checks.FLOAT_DTYPES, shape=(E, 2 * I))
    if w2_bias is not None:
        _checks.tensor(w2_bias, "w2_bias", _checks.FLOAT_DTYPES, shape=(E, H))
    device = w13.device
    _checks.same_device(device, w13_scale=w13_scale, w2=w2, w2_scale=w2_scale, w13_bias=w13_bias, w2_bias=w2_bias)

    w13u, w2u = w13.detach().view(torch.uint8).contiguous(), w2.detach().view(torch.uint8).contiguous()
    s13, s2 = scales_to_e8m0(w13_scale, "w13_scale"), scales_to_e8m0(w2_scale, "w2_scale")
    b13 = None if w13_bias is None else w13_bias.detach().to(torch.float32).contiguous()
    b2 = None if w2_bias is None else w2_bias.detach().to(torch.float32).contiguous()
    if device.type == "cpu":
        return PreparedWeights(w13u, s13, w2u, s2, b13, b2, E, H, I, "canonical")
    if device.type != "cuda":
        raise UnsupportedError(f"mxmoe runs on the CPU or a Hopper CUDA GPU; the weights are on {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    check(lib.mxmoe_check_device(index))
    _check_kernel_scale_range(s13, "w13_scale")
    _check_kernel_scale_range(s2, "w2_scale")
    if inplace:
        tw13, ts13 = _tile(w13u, s13, 2 * I, H, True, True)
        tw2, ts2 = _tile(w2u, s2, H, I, False, True)
    else:
        tw13, ts13, tw2, ts2 = torch.ops.mxmoe.prepare(w13u, s13, w2u, s2)
    return PreparedWeights(tw13, ts13, tw2, ts2, b13, b2, E, H, I, "tiled")
