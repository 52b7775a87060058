"""Weight preparation: canonical MXFP4 or NVFP4 tensors -> what the backend of their device runs.

Canonical fused layout (include/mxmoe/weights.hpp): w13 uint8/int8 [E, 2I, H/2] (gate rows, then up
rows; low nibble = even element), w2 [E, H, I/2], biases [E, 2I] and [E, H], and scales per group G
along K, [E, rows, K/G]:
  MXFP4 (G = 32): E8M0 bytes (uint8 or float8_e8m0fnu; every byte but 0xFF) or float powers of two.
  NVFP4 (G = 16): UE4M3 bytes (uint8 or float8_e4m3fn with the sign bit clear; 0x7F is NaN) or floats
    that E4M3 holds exactly; plus the global scales fp32 w13_global_scale [E, 2] (gate, up) and
    w2_global_scale [E].
On the CPU the oracle runs on the canonical tensors (scale bytes, fp32 biases and global scales). On
a Hopper GPU the weights are tiled for the kernels (src/kernels/tile_layout.hpp); with inplace=True
the tiling overwrites the canonical storage a group of experts at a time, so the peak extra memory is
one staging group, not a second layer.
W4A8 (act="fp8", MXFP4 only): the activations are quantised to E4M3 per row in the forward; on a GPU
the weights take the W4A8 tile layout (same bytes) and each weight row's factor 2^base is kept where
the MXFP4 shift factors go (w13_global_scale [E, 2I], w2_global_scale [E, H])."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Optional

import torch

from . import _checks, ops  # noqa: F401  (ops registers torch.ops.mxmoe)
from ._capi import DTypeError, FormatError, InvalidArgumentError, NotFoundError, ShapeError, UnsupportedError, check, lib

_STAGE_BYTES = 256 << 20  # staging of in-place tiling


@dataclass
class PreparedWeights:
    """Weights ready for fused_moe; torch owns every tensor. layout: 'canonical' (CPU) or 'tiled' (CUDA).

    group: 32 (MXFP4, E8M0 scales) or 16 (NVFP4, UE4M3 scales and the fp32 global scales).
    activation_dtype: the dtype hidden_states must have: bfloat16 (MXFP4 always), float16, or None
    (NVFP4 prepared on the CPU without one: bfloat16 or float16, taken from each call's hidden_states;
    on the GPU the tile layout is made for one of them, bfloat16 unless float16 was asked).
    max_scale_byte: MXFP4's largest E8M0 byte of w13_scale and w2_scale as held here; computed once by
    prepare, so no forward synchronises the host. 0 for NVFP4.
    MXFP4 tiled with bytes above 128: prepare lowers each weight row's bytes by its shift
    d = max(0, the row's largest - 128) (e8m0_shifts) and keeps the factors 2^d as fp32
    w13_global_scale [E, 2I] and w2_global_scale [E, H] (canonical row order), which the kernels
    multiply back in the epilogue (one multiply per weight register; max_scale_byte is then 128). Only a row
    spanning more than 128 bytes keeps its bytes (no factors) and runs the two-multiply format.
    activation_precision: "bf16" (16-bit activations, as activation_dtype says) or "fp8" (W4A8, MXFP4
    with bfloat16 hidden states: prepare's act): FP8 per-token activations, format "mxfp4-e4m3". Tiled,
    w13_global_scale [E, 2I] and w2_global_scale [E, H] then hold each weight row's factor 2^base of
    the W4A8 fold (the scale bytes' place holds the W4A8 table indices; max_scale_byte is unused);
    canonical (CPU), no factors: the oracle folds the rows itself."""

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
    w13_global_scale: Optional[torch.Tensor] = None
    w2_global_scale: Optional[torch.Tensor] = None
    group: int = 32
    activation_dtype: Optional[torch.dtype] = torch.bfloat16
    max_scale_byte: int = 127
    activation_precision: str = "bf16"

    TENSORS = ("w13", "w13_scale", "w2", "w2_scale", "w13_bias", "w2_bias", "w13_global_scale", "w2_global_scale")

    @property
    def device(self) -> torch.device:
        return self.w13.device

    @property
    def format(self) -> str:
        """"mxfp4", "nvfp4", or "mxfp4-e4m3" (W4A8: MXFP4 weights run against E4M3 activations)."""
        if self.group == 16:
            return "nvfp4"
        return "mxfp4-e4m3" if self.fp8_activations else "mxfp4"

    @property
    def fp8_activations(self) -> bool:
        """W4A8: FP8 (E4M3) per-token activations (prepare's act="fp8")."""
        return self.activation_precision == "fp8"

    @property
    def f16_activations(self) -> bool:
        return self.activation_dtype == torch.float16

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (getattr(self, n) for n in self.TENSORS) if t is not None)


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


_E4M3 = getattr(torch, "float8_e4m3fn", None)
_E2M1_NAMES = ("0", "0.5", "1", "1.5", "2", "3", "4", "6")


def _check_finite_e8m0(w: torch.Tensor, s: torch.Tensor, name: str):
    """Bytes 253 and 254 (2^126, 2^127) times a large E2M1 code overflow float32 (2^126 x 4, 2^127 x 2):
    refused naming the block, as the C++ checks do. Only run when such a byte exists."""
    E, R, G = s.shape
    mag = torch.stack([w & 7, (w >> 4) & 7], dim=-1).reshape(E, R, G, 32).amax(dim=-1)  # largest |code| per block
    bad = ((s == 253) & (mag > 5)) | ((s == 254) & (mag > 3))
    if bool(bad.any()):
        at = _checks.first_index(bad)
        byte, code = int(s[tuple(at)]), int(mag[tuple(at)])
        raise FormatError(f"{name}: E8M0 byte {byte} (2^{byte - 127}) at [expert, row, group] {at} times the E2M1 "
                          f"magnitude {_E2M1_NAMES[code]} in its block is infinite in float32")


def scales_to_ue4m3(scales: torch.Tensor, name: str) -> torch.Tensor:
    """UE4M3 bytes (uint8, same device) of NVFP4 block scales given as bytes (uint8, float8_e4m3fn) or
    as floats that E4M3 holds exactly; NaN (0x7F) and the sign bit are refused, naming the index."""
    if scales.dtype == torch.uint8 or scales.dtype == _E4M3:
        b = scales.view(torch.uint8)
    else:
        if _E4M3 is None:
            raise DTypeError(f"{name}: float NVFP4 scales need torch.float8_e4m3fn (torch >= 2.1); pass UE4M3 bytes")
        f = scales.detach().to(torch.float32)
        b = f.to(_E4M3).view(torch.uint8)
        inexact = ~(b.view(_E4M3).to(torch.float32) == f)
        if bool(inexact.any()):
            at = _checks.first_index(inexact)
            raise FormatError(f"{name}: scale {float(f[tuple(at)]):g} at index {at} is not a UE4M3 value (E4M3 with "
                              f"the sign bit clear, at most 448); NVFP4 block scales must be exact")
    nan = (b & 0x7F) == 0x7F
    if bool(nan.any()):
        at = _checks.first_index(nan)
        raise FormatError(f"{name}: the UE4M3 NaN byte 0x{int(b[tuple(at)]):02X} at index {at}")
    sign = (b & 0x80) != 0
    if bool(sign.any()):
        at = _checks.first_index(sign)
        raise FormatError(f"{name}: byte 0x{int(b[tuple(at)]):02X} at index {at} has its sign bit set: NVFP4 block "
                          f"scales are unsigned (UE4M3)")
    return b.contiguous()


def global_scales(scales, name: str, E: int, columns: int, device) -> torch.Tensor:
    """NVFP4 global scales as fp32 [E, 2] (columns 2: w13's gate and up) or [E] (columns 1: w2), on
    `device`. Taken: a tensor [E, columns], [E] or [E, 1] (one scale per expert, used for every
    column), or a sequence of E per-expert scalars (ModelOpt's weight_scale_2) or of (gate, up) pairs.
    Each must be finite and positive."""
    if scales is None:
        raise NotFoundError(f"{name}: NVFP4 weights (group 16, UE4M3 scales) need their fp32 global scales "
                            f"(ModelOpt's weight_scale_2), [E, 2] for w13 (gate, up) and [E] for w2")
    if not isinstance(scales, torch.Tensor):
        try:
            rows = [torch.as_tensor(v).detach().to("cpu", torch.float32).reshape(-1) for v in scales]
            scales = torch.stack(rows) if rows else torch.empty(0)
        except (TypeError, RuntimeError) as e:
            raise InvalidArgumentError(f"{name}: expected a tensor or a sequence of per-expert scalars: {e}") from None
    _checks.tensor(scales, name, _checks.FLOAT_DTYPES + (torch.float64,))
    g = scales.detach().to(device, torch.float32)
    if g.dim() == 2 and g.shape[1] == 1:
        g = g[:, 0]
    if g.dim() == 1 and g.shape[0] == E:
        g = g[:, None].expand(E, columns) if columns == 2 else g
    expected = [E, columns] if columns == 2 else [E]
    if list(g.shape) != expected:
        accepted = "[E, 2], [E] or [E, 1]" if columns == 2 else "[E] or [E, 1]"
        raise ShapeError(f"{name}: shape {list(scales.shape)}, expected {expected} ({accepted}, E = {E})")
    bad = ~(torch.isfinite(g) & (g > 0))
    if bool(bad.any()):
        at = _checks.first_index(bad)
        raise FormatError(f"{name}: {float(g[tuple(at)]):g} at index {at}; a global scale must be finite and positive")
    return g.contiguous()


def e8m0_shifts(s13: torch.Tensor, s2: torch.Tensor):
    """The per-row E8M0 shift of the kernels' Mxfp4Shifted format: the rule of
    src/prepare/scale_shift.hpp, on E8M0 bytes s13 [E, 2I, H/32] (gate rows, then up rows) and s2
    [E, H, I/32] on any device. A weight row's shift is d = max(0, m - 128), m its largest byte; when
    every row holding a byte above 128 spans at most 128 bytes (largest - smallest), returns the bytes
    lowered by their row's d (all in 0..128), the fp32 factors 2^d [E, 2I] and [E, H] (canonical row
    order; E x (2I + H) x 4 bytes) and 128. Otherwise (no byte above 128, or a row spanning more:
    2^128 within one row) the bytes unchanged, None, None and their largest byte. Per row, not per
    (expert, matrix half): a half's shift pushes its rows with smaller bytes down, where the fp32
    products of the kernels underflow. One host synchronisation."""
    top13, top2 = s13.amax(-1).to(torch.int32), s2.amax(-1).to(torch.int32)  # [E, 2I], [E, H]
    d13, d2 = (top13 - 128).clamp(min=0), (top2 - 128).clamp(min=0)
    fits = ((s13.amin(-1).to(torch.int32) >= d13).all() & (s2.amin(-1).to(torch.int32) >= d2).all()).to(torch.int32)
    max_byte, ok = (int(v) for v in torch.stack([torch.maximum(top13.max(), top2.max()), fits]).tolist())
    if max_byte <= 128 or not ok:
        return s13, s2, None, None, max_byte
    s13 = (s13.to(torch.int32) - d13[..., None]).to(torch.uint8)
    s2 = (s2.to(torch.int32) - d2[..., None]).to(torch.uint8)

    def factors(d):  # 2^d from its exponent field: exact
        return ((d + 127) << 23).to(torch.int32).view(torch.float32).contiguous()

    return s13, s2, factors(d13), factors(d2), 128


def _tile(w: torch.Tensor, s: torch.Tensor, rows: int, k: int, gate_up: bool, group: int, inplace: bool, f16: bool,
          row_factor: Optional[torch.Tensor] = None):
    """Canonical [E, rows, k/2] + [E, rows, k/group] -> tiled [E, wb] + [E, sb] on w's device. With
    row_factor (fp32 [E, rows]): the W4A8 tile layout (MXFP4), each row's 2^base written there."""
    E = w.shape[0]
    wb, sb = ops.prepared_bytes(rows, k, group)

    def tile(src_w, src_s, dst_w, dst_s, e0, e1):
        if row_factor is None:
            torch.ops.mxmoe.tile_experts(src_w, src_s, rows, k, gate_up, group, dst_w, dst_s, f16)
        else:
            torch.ops.mxmoe.tile_experts_w4a8(src_w, src_s, rows, k, gate_up, dst_w, dst_s, row_factor[e0:e1])

    if inplace and wb == rows * k // 2 and sb == rows * k // group:
        # Same bytes per expert (K a multiple of 64): tile each staging group back into its own storage.
        per_expert = wb + sb
        n = max(1, min(E, _STAGE_BYTES // per_expert))
        for e0 in range(0, E, n):
            e1 = min(E, e0 + n)
            tile(w[e0:e1].clone(), s[e0:e1].clone(), w[e0:e1], s[e0:e1], e0, e1)
        return w.view(E, wb), s.view(E, sb)
    tw = torch.empty(E, wb, dtype=torch.uint8, device=w.device)
    ts = torch.empty(E, sb, dtype=torch.uint8, device=w.device)
    tile(w, s, tw, ts, 0, E)
    return tw, ts


def _group_of(w13_scale, E: int, I: int, H: int) -> int:
    """32 or 16 from w13_scale's shape [E, 2I, H/32] or [E, 2I, H/16]."""
    _checks.tensor(w13_scale, "w13_scale", _checks.SCALE_DTYPES + _checks.UE4M3_DTYPES, ndim=3)
    for group in (32, 16):
        if H % group == 0 and tuple(w13_scale.shape) == (E, 2 * I, H // group):
            return group
    raise ShapeError(f"w13_scale: shape {list(w13_scale.shape)}, expected {[E, 2 * I, H // 32]} (MXFP4: one E8M0 "
                     f"scale per 32) or {[E, 2 * I, H // 16]} (NVFP4: one UE4M3 scale per 16)")


def prepare(w13, w13_scale, w2, w2_scale, w13_bias=None, w2_bias=None, *, w13_global_scale=None,
            w2_global_scale=None, activation_dtype: Optional[torch.dtype] = None,
            inplace: bool = False, act: str = "bf16") -> PreparedWeights:
    """Prepares canonical MXFP4 or NVFP4 expert weights for fused_moe on their device (CPU or a Hopper GPU).

    The format follows w13_scale's shape: [E, 2I, H/32] is MXFP4, [E, 2I, H/16] NVFP4, which also
    needs w13_global_scale ([E, 2], [E] or E per-expert scalars) and w2_global_scale ([E] or E
    scalars). activation_dtype: MXFP4 runs bfloat16 only; NVFP4 bfloat16 or float16, or None: on the
    CPU either, as each call's hidden_states is; on a GPU bfloat16 (the tile layout places the bits for
    one operand type; pass float16 for fp16 activations).

    inplace=False leaves the arguments untouched. inplace=True lets preparation reuse their storage
    (the tensors' contents are then the prepared bytes): what an engine does once after loading.

    act: "bf16" (default: 16-bit activations, bfloat16 or NVFP4's float16 as activation_dtype says) or
    "fp8" (W4A8, MXFP4 weights with bfloat16 hidden states only): every forward with these weights
    quantises each token's hidden row and each intermediate row to E4M3 with one fp32 scale (amax /
    448); on a GPU the weights take the W4A8 tile layout and their row factors 2^base. NVFP4 weights
    refuse it (UnsupportedError), float16 activations too (DTypeError)."""
    _checks.tensor(w13, "w13", (torch.uint8, torch.int8), ndim=3)
    E, two_i, half_h = w13.shape
    I, H = two_i // 2, half_h * 2
    _checks.tensor(w2, "w2", (torch.uint8, torch.int8), shape=(E, H, I // 2))
    group = _group_of(w13_scale, E, I, H)
    nvfp4 = group == 16
    check(lib.mxmoe_check_problem(E, H, I, group, 1, None))
    _checks.tensor(w2_scale, "w2_scale", _checks.UE4M3_DTYPES if nvfp4 else _checks.SCALE_DTYPES,
                   shape=(E, H, I // group))
    if nvfp4:
        _checks.tensor(w13_scale, "w13_scale", _checks.UE4M3_DTYPES)
    elif w13_scale.dtype == _E4M3:
        raise DTypeError(f"w13_scale: float8_e4m3fn (NVFP4's UE4M3) with the MXFP4 shape {list(w13_scale.shape)}; "
                         f"NVFP4 scales are [E, 2I, H/16] = {[E, 2 * I, H // 16]}")
    if not nvfp4 and (w13_global_scale is not None or w2_global_scale is not None):
        raise InvalidArgumentError("w13_global_scale/w2_global_scale: MXFP4 weights (E8M0 scales, one per 32) carry "
                                   "no global scales; NVFP4 scales are [E, 2I, H/16]")
    activation_dtype = _checks.activation_dtype_for(group, activation_dtype)
    fp8 = _checks.activation_precision(act, "act", group, activation_dtype)
    if w13_bias is not None:
        _checks.tensor(w13_bias, "w13_bias", _checks.FLOAT_DTYPES, shape=(E, 2 * I))
    if w2_bias is not None:
        _checks.tensor(w2_bias, "w2_bias", _checks.FLOAT_DTYPES, shape=(E, H))
    device = w13.device
    _checks.same_device(device, w13_scale=w13_scale, w2=w2, w2_scale=w2_scale, w13_bias=w13_bias, w2_bias=w2_bias,
                        w13_global_scale=w13_global_scale if isinstance(w13_global_scale, torch.Tensor) else None,
                        w2_global_scale=w2_global_scale if isinstance(w2_global_scale, torch.Tensor) else None)
    if device.type not in ("cpu", "cuda"):
        raise UnsupportedError(f"mxmoe runs on the CPU or a Hopper CUDA GPU; the weights are on {device}")

    w13u, w2u = w13.detach().view(torch.uint8).contiguous(), w2.detach().view(torch.uint8).contiguous()
    if nvfp4:
        s13, s2 = scales_to_ue4m3(w13_scale, "w13_scale"), scales_to_ue4m3(w2_scale, "w2_scale")
        g13 = global_scales(w13_global_scale, "w13_global_scale", E, 2, device)
        g2 = global_scales(w2_global_scale, "w2_global_scale", E, 1, device)
        max_byte = 0
    else:
        s13, s2 = scales_to_e8m0(w13_scale, "w13_scale"), scales_to_e8m0(w2_scale, "w2_scale")
        g13 = g2 = None
        # One host synchronisation here, none in the forward: the largest byte picks the kernels' format.
        max_byte = int(torch.maximum(s13.max(), s2.max()))
        if max_byte >= 253:
            _check_finite_e8m0(w13u, s13, "w13_scale")
            _check_finite_e8m0(w2u, s2, "w2_scale")
    b13 = None if w13_bias is None else w13_bias.detach().to(torch.float32).contiguous()
    b2 = None if w2_bias is None else w2_bias.detach().to(torch.float32).contiguous()
    extra = dict(w13_global_scale=g13, w2_global_scale=g2, group=group, activation_dtype=activation_dtype,
                 max_scale_byte=max_byte, activation_precision="fp8" if fp8 else "bf16")
    if device.type == "cpu":
        return PreparedWeights(w13u, s13, w2u, s2, b13, b2, E, H, I, "canonical", **extra)
    index = device.index if device.index is not None else torch.cuda.current_device()
    check(lib.mxmoe_check_device(index))
    if fp8:
        # W4A8: the fold takes every E8M0 byte (no shift); the row factors 2^base ride as the global scales.
        f13 = torch.empty(E, 2 * I, dtype=torch.float32, device=device)
        f2 = torch.empty(E, H, dtype=torch.float32, device=device)
        tw13, ts13 = _tile(w13u, s13, 2 * I, H, True, group, inplace, False, row_factor=f13)
        tw2, ts2 = _tile(w2u, s2, H, I, False, group, inplace, False, row_factor=f2)
        extra.update(w13_global_scale=f13, w2_global_scale=f2)
        return PreparedWeights(tw13, ts13, tw2, ts2, b13, b2, E, H, I, "tiled", **extra)
    if not nvfp4:
        # Bytes above 128: shifted per weight row, the factors 2^d [E, 2I] and [E, H] ride as the global scales.
        s13, s2, g13, g2, max_byte = e8m0_shifts(s13, s2)
        extra.update(w13_global_scale=g13, w2_global_scale=g2, max_scale_byte=max_byte)
    if activation_dtype is None:
        # The GPU tile layout places the bits for one operand type (fp16 has a layout of its own), so
        # prepared NVFP4 weights run one activation dtype there: bfloat16 unless float16 is asked.
        activation_dtype = extra["activation_dtype"] = torch.bfloat16
    f16 = activation_dtype == torch.float16
    if inplace:
        tw13, ts13 = _tile(w13u, s13, 2 * I, H, True, group, True, f16)
        tw2, ts2 = _tile(w2u, s2, H, I, False, group, True, f16)
    else:
        tw13, ts13, tw2, ts2 = torch.ops.mxmoe.prepare(w13u, s13, w2u, s2, group, f16)
    return PreparedWeights(tw13, ts13, tw2, ts2, b13, b2, E, H, I, "tiled", **extra)
