"""mxmoe for PyTorch: prepare MXFP4 expert weights once, run the fused MoE (CPU: the oracle; a Hopper
GPU: the kernels), and the engine-level module Mxfp4MoE. See docs/pytorch.md."""
from ._capi import Error
from ._config import ACTIVATIONS, ROUTING_MODES
from ._forward import fused_moe, fused_moe_from_logits, route
from ._module import Mxfp4MoE
from ._prepare import PreparedWeights, prepare, scales_to_e8m0

__all__ = ["Error", "ACTIVATIONS", "ROUTING_MODES", "fused_moe", "fused_moe_from_logits", "route", "Mxfp4MoE",
           "PreparedWeights", "prepare", "scales_to_e8m0"]
