"""mxmoe: fused Mixture-of-Experts with MXFP4 or NVFP4 expert weights and 16-bit activations (W4A16), or MXFP4
with FP8 per-token activations (W4A8, prepare's act="fp8"), on Hopper, with a CPU oracle everywhere. `import mxmoe` registers torch.ops.mxmoe; the API is mxmoe.torch."""
from . import _capi
from ._capi import Error

__version__ = "0.1.0"


def cuda_compiled() -> bool:
    """True when this build contains the Hopper kernels."""
    return bool(_capi.lib.mxmoe_cuda_compiled())


from . import torch  # noqa: E402  (registers the torch ops)

__all__ = ["Error", "cuda_compiled", "torch", "__version__"]
