"""Argument checks of the torch API: each error names the tensor and what was expected."""
from __future__ import annotations

import torch

from ._capi import DTypeError, InvalidArgumentError, ShapeError, UnsupportedError

SCALE_DTYPES = (torch.uint8, torch.float32, torch.bfloat16, torch.float16) + (
    (torch.float8_e8m0fnu,) if hasattr(torch, "float8_e8m0fnu") else ())
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# NVFP4 block scales: UE4M3 bytes, float8_e4m3fn (sign bit clear), or floats E4M3 holds exactly.
UE4M3_DTYPES = (torch.uint8, torch.float32, torch.bfloat16, torch.float16) + (
    (torch.float8_e4m3fn,) if hasattr(torch, "float8_e4m3fn") else ())
ACTIVATION_DTYPES = (torch.bfloat16, torch.float16)

_WHY_BF16 = ("an E8M0 scale 2^(b-127) spans bfloat16's 8-bit exponent range, which float16's 5-bit exponent "
             "cannot hold (NVFP4 weights, with UE4M3 scales and a global scale, take float16)")


def _names(dtypes) -> str:
    return " or ".join(str(d).replace("torch.", "") for d in dtypes)


def tensor(t, name: str, dtypes, shape=None, ndim=None):
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise DTypeError(f"{name}: dtype {str(t.dtype).replace('torch.', '')}, expected {_names(dtypes)}")
    if ndim is not None and t.dim() != ndim:
        raise ShapeError(f"{name}: expected {ndim} dimensions, got shape {list(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ShapeError(f"{name}: shape {list(t.shape)}, expected {list(shape)}")
    return t


def same_device(device: torch.device, **tensors):
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise InvalidArgumentError(f"{name} is on {t.device}, but the prepared weights are on {device}: "
                                       f"all tensors must be on one device")


def activation_dtype_for(group: int, dtype):
    """The activation dtype prepared weights of `group` record: MXFP4 bfloat16 (float16 refused, saying
    why); NVFP4 bfloat16, float16 or None (either, per call)."""
    if dtype is None:
        return torch.bfloat16 if group == 32 else None
    if dtype not in ACTIVATION_DTYPES:
        raise DTypeError(f"activation_dtype: {_names((dtype,))}, expected bfloat16 or float16")
    if group == 32 and dtype != torch.bfloat16:
        raise DTypeError(f"activation_dtype: float16 with MXFP4 weights; they need bfloat16: {_WHY_BF16}")
    return dtype


# Activation precisions (the C++ ActivationPrecision names, as `mxmoe bench --act` spells them): "bf16"
# keeps the activations 16-bit (bfloat16, or NVFP4's float16), "fp8" is W4A8: each token's hidden row
# and each (token, slot) intermediate row quantised to E4M3 with one fp32 scale (amax / 448), MXFP4
# weights folded to E4M3 x 2^base per row (include/mxmoe/reference.hpp, Fp8PerToken).
ACTIVATION_PRECISIONS = ("bf16", "fp8")


def activation_precision(value, name: str, group: int, dtype=None) -> bool:
    """True for "fp8" (W4A8), False for "bf16"; fp8 needs MXFP4 weights (group 32) and bfloat16
    hidden states (`dtype`, None: not fixed yet)."""
    key = str(value).lower() if isinstance(value, str) else None
    if key not in ACTIVATION_PRECISIONS:
        raise InvalidArgumentError(f"{name}: {value!r}, expected 'bf16' (16-bit activations) or 'fp8' (W4A8: FP8 "
                                   f"per-token activations with MXFP4 weights)")
    if key == "bf16":
        return False
    if group != 32:
        raise UnsupportedError(f"{name}='fp8': FP8 activations (W4A8) take MXFP4 weights (E8M0 scales, one per 32); "
                               f"these are NVFP4 (UE4M3 scales, one per 16), which run 16-bit activations only")
    if dtype is not None and dtype != torch.bfloat16:
        raise DTypeError(f"{name}='fp8': FP8 activations (W4A8) are quantised from bfloat16 hidden states, got "
                         f"activation_dtype {_names((dtype,))}")
    return True


def activations(hidden: torch.Tensor, name: str, prepared):
    """hidden [T, H] in a dtype the prepared weights run: bfloat16 (MXFP4), bfloat16 or float16 (NVFP4;
    the one prepare was given, if any)."""
    dtype = hidden.dtype if isinstance(hidden, torch.Tensor) else None
    if prepared.group == 32 and dtype == torch.float16:
        raise DTypeError(f"{name}: dtype float16; MXFP4 weights need bfloat16 activations: {_WHY_BF16}. Pass "
                         f"{name}.to(torch.bfloat16)")
    if prepared.activation_dtype is not None and dtype in ACTIVATION_DTYPES and dtype != prepared.activation_dtype:
        raise DTypeError(f"{name}: dtype {_names((dtype,))}; the weights were prepared for "
                         f"{_names((prepared.activation_dtype,))} activations (prepare's activation_dtype)")
    if dtype == torch.float32:
        allowed = "bfloat16" if prepared.group == 32 else "bfloat16 or float16"
        raise DTypeError(f"{name}: dtype float32; the fused MoE runs 16-bit activations ({allowed}): pass "
                         f"{name}.to(torch.bfloat16)")
    return tensor(hidden, name, ACTIVATION_DTYPES, ndim=2)


def first_index(mask: torch.Tensor) -> list:
    """The index (a list, one entry per dimension) of the first True of `mask`, row-major."""
    flat = int(mask.reshape(-1).nonzero()[0, 0])
    index = []
    for size in reversed(mask.shape):
        index.append(flat % size)
        flat //= size
    return list(reversed(index))
