"""ctypes binding of libmxmoe_c (include/mxmoe/c_api.h) and its errors as Python exceptions.

The library is plain C, so the same build serves every PyTorch version: torch tensors are handed
over as data pointers, the CUDA stream as its handle."""
from __future__ import annotations

import ctypes
import os
import pathlib

__all__ = ["Error", "lib", "check", "library_path"]


class Error(RuntimeError):
    """An error of mxmoe; the message names the tensor, value or device at fault."""

    code = "internal"


class InvalidArgumentError(Error, ValueError):
    code = "invalid argument"


class ShapeError(Error, ValueError):
    code = "shape"


class DTypeError(Error, TypeError):
    code = "dtype"


class FormatError(Error, ValueError):
    code = "format"


class IoError(Error, OSError):
    code = "io"


class NotFoundError(Error, LookupError):
    code = "not found"


class UnsupportedError(Error, NotImplementedError):
    code = "unsupported"


class CudaError(Error):
    code = "cuda"


# Status code (mxmoe ErrorCode + 1, c_api.h) -> exception class.
_ERRORS = {1: InvalidArgumentError, 2: ShapeError, 3: DTypeError, 4: FormatError, 5: IoError,
           6: NotFoundError, 7: UnsupportedError, 8: CudaError, 9: Error}


def _candidates():
    env = os.environ.get("MXMOE_LIBRARY")
    if env:
        yield pathlib.Path(env)
        return
    here = pathlib.Path(__file__).resolve().parent
    yield here / "libmxmoe_c.so"  # installed by `pip install .`
    # A source checkout: python/mxmoe next to the CMake build folders.
    for build in ("build", "build-py"):
        yield here.parent.parent / build / "libmxmoe_c.so"


def library_path() -> pathlib.Path:
    tried = []
    for path in _candidates():
        if path.is_file():
            return path
        tried.append(str(path))
    raise ImportError("mxmoe: libmxmoe_c.so not found (looked at " + ", ".join(tried) +
                      "); install the package with `pip install .` or set MXMOE_LIBRARY")


class Weights(ctypes.Structure):
    _fields_ = [("w13", ctypes.c_void_p), ("w13_scale", ctypes.c_void_p), ("w2", ctypes.c_void_p),
                ("w2_scale", ctypes.c_void_p), ("w13_bias", ctypes.c_void_p), ("w2_bias", ctypes.c_void_p),
                ("w13_global_scale", ctypes.c_void_p), ("w2_global_scale", ctypes.c_void_p),
                ("num_experts", ctypes.c_int), ("hidden", ctypes.c_int), ("inter", ctypes.c_int),
                ("group", ctypes.c_int), ("f16_activations", ctypes.c_int), ("max_scale_byte", ctypes.c_int),
                ("fp8_activations", ctypes.c_int)]


class Activation(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("limit", ctypes.c_float), ("alpha", ctypes.c_float)]


class Routing(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_int), ("top_k", ctypes.c_int), ("renormalize", ctypes.c_int),
                ("n_groups", ctypes.c_int), ("topk_groups", ctypes.c_int), ("routed_scaling", ctypes.c_float)]


_P = ctypes.c_void_p
_I = ctypes.c_int
_L = ctypes.c_int64
_SIGNATURES = {
    "mxmoe_c_abi_version": ([], _I),
    "mxmoe_last_error": ([], ctypes.c_char_p),
    "mxmoe_cuda_compiled": ([], _I),
    "mxmoe_check_device": ([_I], _I),
    "mxmoe_check_problem": ([_I, _I, _I, _I, _I, ctypes.POINTER(Activation)], _I),
    "mxmoe_prepared_bytes": ([_I, _I, _I, ctypes.POINTER(_L), ctypes.POINTER(_L)], _I),
    "mxmoe_scales_to_e8m0": ([_P, _P, ctypes.POINTER(_L), _I, ctypes.c_char_p], _I),
    "mxmoe_tile_experts_cuda": ([_P, _P, _I, _I, _I, _I, _I, _I, _P, _P, _P], _I),
    "mxmoe_tile_experts_w4a8_cuda": ([_P, _P, _I, _I, _I, _I, _P, _P, _P, _P, _P], _I),
    "mxmoe_workspace_bytes": ([_I, _I, _I, _I, _I, ctypes.POINTER(_L)], _I),
    "mxmoe_workspace_bytes_fp8": ([_I, _I, _I, _I, _I, ctypes.POINTER(_L)], _I),
    "mxmoe_forward_cuda": ([ctypes.POINTER(Weights), ctypes.POINTER(Activation), _P, _P, _P, _P, _I, _I, _P, _L, _P, _I], _I),
    "mxmoe_route_cuda": ([_P, _P, _I, _I, ctypes.POINTER(Routing), _P, _P, _P], _I),
    "mxmoe_forward_cpu": ([ctypes.POINTER(Weights), ctypes.POINTER(Activation), _P, _P, _P, _P, _I, _I, _I], _I),
    "mxmoe_route_cpu": ([_P, _P, _I, _I, ctypes.POINTER(Routing), _P, _P], _I),
    "mxmoe_layer_open": ([ctypes.c_char_p, _I, ctypes.POINTER(_P)], _I),
    "mxmoe_layer_shape": ([_P, ctypes.POINTER(_I), ctypes.POINTER(_I), ctypes.POINTER(_I), ctypes.POINTER(_I)], _I),
    "mxmoe_layer_format": ([_P, ctypes.POINTER(_I)], _I),
    "mxmoe_layer_copy": ([_P, ctypes.c_char_p, _P, _L], _I),
    "mxmoe_layer_bytes": ([_P, ctypes.c_char_p], _L),
    "mxmoe_layer_description": ([_P], ctypes.c_char_p),
    "mxmoe_layer_close": ([_P], None),
    "mxmoe_fused_aliases": ([ctypes.c_char_p, ctypes.c_char_p, _L], _I),
}
ABI_VERSION = 6


def _load():
    path = library_path()
    handle = ctypes.CDLL(str(path))
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.argtypes = args
        fn.restype = res
    if handle.mxmoe_c_abi_version() != ABI_VERSION:
        raise ImportError(f"mxmoe: {path} has C ABI version {handle.mxmoe_c_abi_version()}, "
                          f"this package needs {ABI_VERSION}: rebuild it")
    return handle


lib = _load()


def check(status: int) -> None:
    """Raises the exception of a nonzero status with the library's message."""
    if status:
        message = lib.mxmoe_last_error().decode("utf-8", "replace")
        raise _ERRORS.get(status, Error)(message)


def fused_aliases(role: str) -> list[str]:
    buf = ctypes.create_string_buffer(512)
    check(lib.mxmoe_fused_aliases(role.encode(), buf, len(buf)))
    return buf.value.decode().split(",")
