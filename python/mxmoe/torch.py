"""mxmoe for PyTorch: prepare MXFP4 or NVFP4 expert weights once, run the fused MoE (CPU: the oracle;
a Hopper GPU: the kernels), and the engine-level modules Mxfp4MoE and Nvfp4MoE. See docs/pytorch.md."""
from ._capi import Error
from ._checks import ACTIVATION_PRECISIONS
from ._config import ACTIVATIONS, ROUTING_MODES
from ._forward import fused_moe, fused_moe_from_logits, route
from ._module import Mxfp4MoE, Nvfp4MoE
from ._prepare import PreparedWeights, global_scales, prepare, scales_to_e8m0, scales_to_ue4m3

__all__ = ["Error", "ACTIVATIONS", "ACTIVATION_PRECISIONS", "ROUTING_MODES", "fused_moe", "fused_moe_from_logits", "route", "Mxfp4MoE",
           "Nvfp4MoE", "PreparedWeights", "global_scales", "prepare", "scales_to_e8m0", "scales_to_ue4m3"]
