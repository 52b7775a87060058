"""Argument checks of the torch API: each error names the tensor and what was expected."""
from __future__ import annotations

import torch

from ._capi import DTypeError, InvalidArgumentError, ShapeError

SCALE_DTYPES = (torch.uint8, torch.float32, torch.bfloat16, torch.float16) + (
    (torch.float8_e8m0fnu,) if hasattr(torch, "float8_e8m0fnu") else ())
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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


def activations(hidden: torch.Tensor, name: str = "hidden_states"):
    if isinstance(hidden, torch.Tensor) and hidden.dtype in (torch.float16, torch.float32):
        raise DTypeError(f"{name}: dtype {str(hidden.dtype).replace('torch.', '')}; MXFP4 weights with 16-bit "
                         f"activations (W4A16) need bfloat16 activations: pass hidden_states.to(torch.bfloat16)")
    return tensor(hidden, name, (torch.bfloat16,), ndim=2)


def first_index(mask: torch.Tensor) -> list:
    """The index (a list, one entry per dimension) of the first True of `mask`, row-major."""
    flat = int(mask.reshape(-1).nonzero()[0, 0])
    index = []
    for size in reversed(mask.shape):
        index.append(flat % size)
        flat //= size
    return list(reversed(index))
