"""Mxfp4MoE: the engine-level MoE method in three steps, as SGLang's and vLLM's MXFP4 Marlin methods:
create_weights (in the constructor) registers the checkpoint's tensors, the engine's loader fills
them, process_weights_after_loading() takes them under any of their names (the C++ alias table's),
prepares them in place and frees the loader's copies, and forward() runs the fused MoE."""
from __future__ import annotations

import ctypes
from typing import Optional

import torch

from . import _capi, _config
from ._capi import InvalidArgumentError, NotFoundError, check, lib
from ._forward import fused_moe
from ._prepare import PreparedWeights, prepare

_ROLES = ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias")


class Mxfp4MoE(torch.nn.Module):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, *,
                 scale_dtype: torch.dtype = torch.float32, activation: str = "silu", has_bias: bool = False,
                 clamp_limit: Optional[float] = None, swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
                 routed_scaling_factor: Optional[float] = None, expert_map: Optional[torch.Tensor] = None,
                 device=None):
        super().__init__()
        check(lib.mxmoe_check_problem(num_experts, hidden_size, intermediate_size, 1, None))
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.activation = activation
        self.clamp_limit, self.swiglu_alpha, self.swiglu_limit = clamp_limit, swiglu_alpha, swiglu_limit
        self.routed_scaling_factor = routed_scaling_factor
        _config.activation(activation, clamp_limit, swiglu_alpha, swiglu_limit)  # refuse bad names now
        self.expert_map = expert_map
        self.prepared: Optional[PreparedWeights] = None
        self.create_weights(scale_dtype=scale_dtype, has_bias=has_bias, device=device)

    def create_weights(self, *, scale_dtype=torch.float32, has_bias=False, device=None):
        """Registers w13_weight [E, 2I, H/2], w2_weight [E, H, I/2] (uint8, packed E2M1), their
        *_weight_scale [E, rows, K/32] in scale_dtype, and w13_bias/w2_bias when has_bias."""
        E, H, I = self.num_experts, self.hidden_size, self.intermediate_size

        def param(shape, dtype):
            return torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)

        self.w13_weight = param((E, 2 * I, H // 2), torch.uint8)
        self.w2_weight = param((E, H, I // 2), torch.uint8)
        self.w13_weight_scale = param((E, 2 * I, H // 32), scale_dtype)
        self.w2_weight_scale = param((E, H, I // 32), scale_dtype)
        if has_bias:
            self.w13_bias = param((E, 2 * I), torch.float32)
            self.w2_bias = param((E, H), torch.float32)

    # The module attribute names a loader may have registered for each role: "w13_weight",
    # "w13_weight_scale" | "w13_weight_scale_inv", "w13_weight_bias" | "w13_bias", ...
    @staticmethod
    def aliases(role: str) -> list:
        return [name.replace(".", "_") for name in _capi.fused_aliases(role)]

    def _find(self, role: str, required: bool):
        """The one attribute holding `role`, or None; errors before anything is touched."""
        names = [n for n in self.aliases(role) if isinstance(getattr(self, n, None), torch.Tensor)]
        if len(names) > 1:
            raise InvalidArgumentError(f"{role}: the module holds both {' and '.join(names)}; keep one")
        if not names and required:
            raise NotFoundError(f"{role}: none of {', '.join(self.aliases(role))} is registered on the module")
        return names[0] if names else None

    @torch.no_grad()
    def process_weights_after_loading(self):
        """Prepares the loaded tensors in place on their device and frees the loader's copies."""
        if self.prepared is not None:
            raise InvalidArgumentError("process_weights_after_loading was called already")
        found = {role: self._find(role, role in ("w13", "w13_scale", "w2", "w2_scale")) for role in _ROLES}
        taken = {role: None if name is None else getattr(self, name).data for role, name in found.items()}
        for name in found.values():
            if name is not None:
                delattr(self, name)  # the loader's copy goes; preparation reuses its storage
        try:
            self.prepared = prepare(taken["w13"], taken["w13_scale"], taken["w2"], taken["w2_scale"],
                                    taken["w13_bias"], taken["w2_bias"], inplace=True)
        except Exception:
            for role, name in found.items():  # put the loader's tensors back, under their names
                if name is not None:
                    setattr(self, name, torch.nn.Parameter(taken[role], requires_grad=False))
            raise
        for name in ("w13", "w13_scale", "w2", "w2_scale", "w13_bias", "w2_bias"):
            tensor = getattr(self.prepared, name)
            if tensor is not None:
                self.register_buffer("prepared_" + name, tensor, persistent=False)

    def forward(self, hidden_states: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.prepared is None:
            raise InvalidArgumentError("Mxfp4MoE.forward before process_weights_after_loading(): load the "
                                       "weights, then call process_weights_after_loading() once")
        return fused_moe(hidden_states, self.prepared, topk_weights, topk_ids, activation=self.activation,
                         expert_map=self.expert_map, out=out, routed_scaling_factor=self.routed_scaling_factor,
                         clamp_limit=self.clamp_limit, swiglu_alpha=self.swiglu_alpha, swiglu_limit=self.swiglu_limit)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda() move buffers; keep the prepared view on the moved tensors. Moving prepared
        # weights between CPU and GPU is refused: their layouts differ (prepare on the target device).
        result = super()._apply(fn, *args, **kwargs)
        if self.prepared is not None:
            moved = {n: getattr(self, "prepared_" + n, None) for n in ("w13", "w13_scale", "w2", "w2_scale",
                                                                        "w13_bias", "w2_bias")}
            if moved["w13"].device.type != self.prepared.w13.device.type:
                raise InvalidArgumentError("prepared weights cannot change device type; load and prepare on the "
                                           "target device")
            for n, t in moved.items():
                setattr(self.prepared, n, t)
        return result

    @classmethod
    def from_checkpoint(cls, path, layer: int, *, device=None, **kwargs) -> "Mxfp4MoE":
        """The MoE layer `layer` of a safetensors file, index or directory, through the C++ loader (every
        naming; fp32 or E8M0 scales), prepared on `device` (default: CUDA when present, else CPU).
        Router tensors, when present, are kept as buffers router_weight, correction_bias, router_logit_bias."""
        handle = ctypes.c_void_p()
        check(lib.mxmoe_layer_open(str(path).encode(), int(layer), ctypes.byref(handle)))
        try:
            E, H, I = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            has = (ctypes.c_int * 5)()
            check(lib.mxmoe_layer_shape(handle, ctypes.byref(E), ctypes.byref(H), ctypes.byref(I), has))
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            module = cls(E.value, H.value, I.value, scale_dtype=torch.uint8, has_bias=bool(has[0] or has[1]),
                         device="cpu", **kwargs)

            def fill(role, tensor):
                check(lib.mxmoe_layer_copy(handle, role.encode(), tensor.data_ptr(), tensor.numel() * tensor.element_size()))

            with torch.no_grad():
                fill("w13", module.w13_weight)
                fill("w13_scale", module.w13_weight_scale)
                fill("w2", module.w2_weight)
                fill("w2_scale", module.w2_weight_scale)
                if has[0] or has[1]:
                    for role, p in (("w13_bias", module.w13_bias), ("w2_bias", module.w2_bias)):
                        if lib.mxmoe_layer_bytes(handle, role.encode()):
                            fill(role, p)
                        else:
                            p.zero_()
                for i, (role, shape) in enumerate((("router_weight", (E.value, H.value)),
                                                   ("correction_bias", (E.value,)),
                                                   ("router_logit_bias", (E.value,)))):
                    if has[2 + i]:
                        t = torch.empty(shape, dtype=torch.float32)
                        fill(role, t)
                        module.register_buffer(role, t.to(device), persistent=False)
            module.description = lib.mxmoe_layer_description(handle).decode()
        finally:
            lib.mxmoe_layer_close(handle)
        if torch.device(device).type != "cpu":
            for name in ("w13_weight", "w2_weight", "w13_weight_scale", "w2_weight_scale", "w13_bias", "w2_bias"):
                p = getattr(module, name, None)
                if p is not None:
                    setattr(module, name, torch.nn.Parameter(p.data.to(device), requires_grad=False))
        module.process_weights_after_loading()
        return module
