"""Mxfp4MoE and Nvfp4MoE: the engine-level MoE method in three steps, as SGLang's and vLLM's quantized
MoE methods: create_weights (in the constructor) registers the checkpoint's tensors, the engine's
loader fills them, process_weights_after_loading() takes them under any of their names (the C++
alias table's; NVFP4 also ModelOpt's per-expert names), prepares them in place and frees the loader's
copies, and forward() runs the fused MoE. Mxfp4MoE(..., activation_precision="fp8") runs W4A8 (FP8 per-token
activations); Nvfp4MoE refuses it."""
from __future__ import annotations

import ctypes
from typing import Optional

import torch

from . import _capi, _checks, _config
from ._capi import InvalidArgumentError, NotFoundError, check, lib
from ._forward import fused_moe
from ._prepare import PreparedWeights, prepare

_ROLES = ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias")
_REQUIRED = ("w13", "w13_scale", "w2", "w2_scale")
# NVFP4's global scales: ModelOpt's weight_scale_2 (the C++ alias table's names when it has the role).
_GLOBAL_FALLBACK = {"w13_global_scale": ["w13_weight_scale_2"], "w2_global_scale": ["w2_weight_scale_2"]}
_E4M3 = getattr(torch, "float8_e4m3fn", torch.uint8)


def _param(shape, dtype, device):
    return torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class _QuantizedMoE(torch.nn.Module):
    """What Mxfp4MoE and Nvfp4MoE share: finding the loaded tensors, preparing them, the forward."""

    GROUP = 32
    _ROLES = _ROLES

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, *, activation: str = "silu",
                 clamp_limit: Optional[float] = None, swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
                 routed_scaling_factor: Optional[float] = None, expert_map: Optional[torch.Tensor] = None,
                 batch_invariant: bool = False, activation_precision: str = "bf16"):
        super().__init__()
        check(lib.mxmoe_check_problem(num_experts, hidden_size, intermediate_size, self.GROUP, 1, None))
        # "bf16" or "fp8" (W4A8, MXFP4 only: refused here for NVFP4, before any weight is registered)
        fp8 = _checks.activation_precision(activation_precision, "activation_precision", self.GROUP)
        self.activation_precision = "fp8" if fp8 else "bf16"
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.activation = activation
        self.clamp_limit, self.swiglu_alpha, self.swiglu_limit = clamp_limit, swiglu_alpha, swiglu_limit
        self.routed_scaling_factor = routed_scaling_factor
        _config.activation(activation, clamp_limit, swiglu_alpha, swiglu_limit)  # refuse bad names now
        self.expert_map = expert_map
        self.batch_invariant = batch_invariant  # fused_moe's: a token's bits the same in any batch
        self.prepared: Optional[PreparedWeights] = None

    # The module attribute names a loader may have registered for each role: "w13_weight",
    # "w13_weight_scale" | "w13_weight_scale_inv", "w13_weight_bias" | "w13_bias", ...
    @staticmethod
    def aliases(role: str) -> list:
        try:
            names = _capi.fused_aliases(role)
        except NotFoundError:
            if role not in _GLOBAL_FALLBACK:
                raise
            names = _GLOBAL_FALLBACK[role]
        return [name.replace(".", "_") for name in names]

    def _find(self, role: str, required: bool):
        """The one attribute holding `role`, or None; errors before anything is touched."""
        names = [n for n in self.aliases(role) if isinstance(getattr(self, n, None), torch.Tensor)]
        if len(names) > 1:
            raise InvalidArgumentError(f"{role}: the module holds both {' and '.join(names)}; keep one")
        if not names and required:
            raise NotFoundError(f"{role}: none of {', '.join(self.aliases(role))} is registered on the module")
        return names[0] if names else None

    def _take(self):
        """(the tensors by role, a function that puts the loader's attributes back); the loader's
        attributes are removed, so that preparation can reuse their storage."""
        found = {role: self._find(role, role in self._required()) for role in self._ROLES}
        taken = {role: None if name is None else getattr(self, name).data for role, name in found.items()}
        for name in found.values():
            if name is not None:
                delattr(self, name)

        def restore():
            for role, name in found.items():  # the loader's tensors, back under their names
                if name is not None:
                    setattr(self, name, torch.nn.Parameter(taken[role], requires_grad=False))
        return taken, restore

    def _required(self):
        return _REQUIRED

    def _prepare(self, taken) -> PreparedWeights:
        return prepare(taken["w13"], taken["w13_scale"], taken["w2"], taken["w2_scale"], taken["w13_bias"],
                       taken["w2_bias"], inplace=True, act=self.activation_precision)

    def _after_prepare(self):
        pass

    @torch.no_grad()
    def process_weights_after_loading(self):
        """Prepares the loaded tensors in place on their device and frees the loader's copies; when
        they are refused (a missing or doubled tensor, a bad scale), they stay on the module unchanged."""
        if self.prepared is not None:
            raise InvalidArgumentError("process_weights_after_loading was called already")
        taken, restore = self._take()
        try:
            self.prepared = self._prepare(taken)
        except Exception:
            restore()
            raise
        self._after_prepare()
        for name in PreparedWeights.TENSORS:
            tensor = getattr(self.prepared, name)
            if tensor is not None:
                self.register_buffer("prepared_" + name, tensor, persistent=False)

    def forward(self, hidden_states: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.prepared is None:
            raise InvalidArgumentError(f"{type(self).__name__}.forward before process_weights_after_loading(): load "
                                       f"the weights, then call process_weights_after_loading() once")
        return fused_moe(hidden_states, self.prepared, topk_weights, topk_ids, activation=self.activation,
                         expert_map=self.expert_map, out=out, routed_scaling_factor=self.routed_scaling_factor,
                         clamp_limit=self.clamp_limit, swiglu_alpha=self.swiglu_alpha, swiglu_limit=self.swiglu_limit,
                         batch_invariant=self.batch_invariant)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda() move buffers; keep the prepared view on the moved tensors. Moving prepared
        # weights between CPU and GPU is refused: their layouts differ (prepare on the target device).
        result = super()._apply(fn, *args, **kwargs)
        if self.prepared is not None:
            moved = {n: getattr(self, "prepared_" + n, None) for n in PreparedWeights.TENSORS}
            if moved["w13"].device.type != self.prepared.w13.device.type:
                raise InvalidArgumentError("prepared weights cannot change device type; load and prepare on the "
                                           "target device")
            for n, t in moved.items():
                setattr(self.prepared, n, t)
        return result

    @classmethod
    def from_checkpoint(cls, path, layer: int, *, device=None, **kwargs) -> "_QuantizedMoE":
        """The MoE layer `layer` of a safetensors file, index or directory, through the C++ loader (every
        naming; MXFP4 with fp32 or E8M0 scales, NVFP4), prepared on `device` (default: CUDA when present,
        else CPU). Gives an Mxfp4MoE or an Nvfp4MoE, as the checkpoint's format is. Router tensors, when
        present, are kept as buffers router_weight, correction_bias, router_logit_bias."""
        handle = ctypes.c_void_p()
        check(lib.mxmoe_layer_open(str(path).encode(), int(layer), ctypes.byref(handle)))
        try:
            E, H, I, group = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            has = (ctypes.c_int * 5)()
            check(lib.mxmoe_layer_shape(handle, ctypes.byref(E), ctypes.byref(H), ctypes.byref(I), has))
            check(lib.mxmoe_layer_format(handle, ctypes.byref(group)))
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            kind = Nvfp4MoE if group.value == 16 else Mxfp4MoE
            module = kind(E.value, H.value, I.value, scale_dtype=torch.uint8, has_bias=bool(has[0] or has[1]),
                          device="cpu", **kwargs)

            def fill(role, tensor):
                check(lib.mxmoe_layer_copy(handle, role.encode(), tensor.data_ptr(),
                                           tensor.numel() * tensor.element_size()))

            with torch.no_grad():
                fill("w13", module.w13_weight)
                fill("w13_scale", module.w13_weight_scale)
                fill("w2", module.w2_weight)
                fill("w2_scale", module.w2_weight_scale)
                if group.value == 16:
                    fill("w13_global_scale", module.w13_weight_scale_2)
                    fill("w2_global_scale", module.w2_weight_scale_2)
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
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, torch.nn.Parameter(p.data.to(device), requires_grad=False))
        module.process_weights_after_loading()
        return module


class Mxfp4MoE(_QuantizedMoE):
    """MXFP4 experts (E2M1, one E8M0 scale per 32 along K), bf16 activations (hidden states and output).

    activation_precision: "bf16" (W4A16, the default) or "fp8" (W4A8: inside the forward each token's
    hidden row and each intermediate row are quantised to E4M3 with one fp32 scale; prepare's act)."""

    GROUP = 32

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, *,
                 scale_dtype: torch.dtype = torch.float32, activation: str = "silu", has_bias: bool = False,
                 clamp_limit: Optional[float] = None, swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
                 routed_scaling_factor: Optional[float] = None, expert_map: Optional[torch.Tensor] = None,
                 device=None, batch_invariant: bool = False, activation_precision: str = "bf16"):
        super().__init__(num_experts, hidden_size, intermediate_size, activation=activation, clamp_limit=clamp_limit,
                         swiglu_alpha=swiglu_alpha, swiglu_limit=swiglu_limit,
                         routed_scaling_factor=routed_scaling_factor, expert_map=expert_map,
                         batch_invariant=batch_invariant, activation_precision=activation_precision)
        self.create_weights(scale_dtype=scale_dtype, has_bias=has_bias, device=device)

    def create_weights(self, *, scale_dtype=torch.float32, has_bias=False, device=None):
        """Registers w13_weight [E, 2I, H/2], w2_weight [E, H, I/2] (uint8, packed E2M1), their
        *_weight_scale [E, rows, K/32] in scale_dtype, and w13_bias/w2_bias when has_bias."""
        E, H, I = self.num_experts, self.hidden_size, self.intermediate_size
        self.w13_weight = _param((E, 2 * I, H // 2), torch.uint8, device)
        self.w2_weight = _param((E, H, I // 2), torch.uint8, device)
        self.w13_weight_scale = _param((E, 2 * I, H // 32), scale_dtype, device)
        self.w2_weight_scale = _param((E, H, I // 32), scale_dtype, device)
        if has_bias:
            self.w13_bias = _param((E, 2 * I), torch.float32, device)
            self.w2_bias = _param((E, H), torch.float32, device)


class _Nvfp4Linear(torch.nn.Module):
    """One ModelOpt NVFP4 matrix: weight uint8 [N, K/2], weight_scale [N, K/16] (F8_E4M3),
    weight_scale_2 (the global scale) and input_scale (ignored: activations stay 16-bit), fp32 scalars."""

    def __init__(self, rows: int, k: int, scale_dtype, device):
        super().__init__()
        self.weight = _param((rows, k // 2), torch.uint8, device)
        self.weight_scale = _param((rows, k // 16), scale_dtype, device)
        self.weight_scale_2 = _param((), torch.float32, device)
        self.input_scale = _param((), torch.float32, device)


class _Nvfp4Expert(torch.nn.Module):
    def __init__(self, hidden: int, inter: int, scale_dtype, device):
        super().__init__()
        self.gate_proj = _Nvfp4Linear(inter, hidden, scale_dtype, device)
        self.up_proj = _Nvfp4Linear(inter, hidden, scale_dtype, device)
        self.down_proj = _Nvfp4Linear(hidden, inter, scale_dtype, device)


class Nvfp4MoE(_QuantizedMoE):
    """NVFP4 experts (E2M1, one UE4M3 scale per 16 along K, one fp32 global scale per matrix), bf16 or
    fp16 activations (params_dtype; None: either, per call, on the CPU; bfloat16 on a GPU, whose tile
    layout is made for one operand type).

    layout="fused" registers vLLM's/SGLang's fused names: w13_weight [E, 2I, H/2], w2_weight,
    w13_weight_scale [E, 2I, H/16], w2_weight_scale [E, H, I/16] (scale_dtype, default float8_e4m3fn),
    w13_weight_scale_2 fp32 [E, 2] (gate, up; a loader may put [E] there instead), w2_weight_scale_2 [E],
    and w13_input_scale/w2_input_scale (ignored). layout="per_expert" registers ModelOpt's checkpoint
    names, so load_state_dict takes them as stored: experts.{e}.{gate_proj,up_proj,down_proj}.{weight,
    weight_scale, weight_scale_2, input_scale}.

    activation_precision: "bf16" only (16-bit activations); "fp8" (W4A8) takes MXFP4 weights and is
    refused here (UnsupportedError)."""

    GROUP = 16
    _INPUT_SCALES = ("w13_input_scale", "w2_input_scale")

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, *,
                 params_dtype: Optional[torch.dtype] = torch.bfloat16, layout: str = "fused",
                 scale_dtype: torch.dtype = _E4M3, activation: str = "silu", has_bias: bool = False,
                 clamp_limit: Optional[float] = None, swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
                 routed_scaling_factor: Optional[float] = None, expert_map: Optional[torch.Tensor] = None,
                 device=None, batch_invariant: bool = False, activation_precision: str = "bf16"):
        super().__init__(num_experts, hidden_size, intermediate_size, activation=activation, clamp_limit=clamp_limit,
                         swiglu_alpha=swiglu_alpha, swiglu_limit=swiglu_limit,
                         routed_scaling_factor=routed_scaling_factor, expert_map=expert_map,
                         batch_invariant=batch_invariant, activation_precision=activation_precision)
        self.params_dtype = _checks.activation_dtype_for(16, params_dtype)
        if layout not in ("fused", "per_expert"):
            raise InvalidArgumentError(f"layout '{layout}': expected 'fused' or 'per_expert'")
        self.create_weights(layout=layout, scale_dtype=scale_dtype, has_bias=has_bias, device=device)

    _ROLES = _ROLES + ("w13_global_scale", "w2_global_scale")

    def _required(self):
        return _REQUIRED + ("w13_global_scale", "w2_global_scale")

    def create_weights(self, *, layout="fused", scale_dtype=_E4M3, has_bias=False, device=None):
        E, H, I = self.num_experts, self.hidden_size, self.intermediate_size
        if layout == "per_expert":
            self.experts = torch.nn.ModuleList(_Nvfp4Expert(H, I, scale_dtype, device) for _ in range(E))
        else:
            self.w13_weight = _param((E, 2 * I, H // 2), torch.uint8, device)
            self.w2_weight = _param((E, H, I // 2), torch.uint8, device)
            self.w13_weight_scale = _param((E, 2 * I, H // 16), scale_dtype, device)
            self.w2_weight_scale = _param((E, H, I // 16), scale_dtype, device)
            self.w13_weight_scale_2 = _param((E, 2), torch.float32, device)
            self.w2_weight_scale_2 = _param((E,), torch.float32, device)
            self.w13_input_scale = _param((E, 2), torch.float32, device)
            self.w2_input_scale = _param((E,), torch.float32, device)
        if has_bias:
            self.w13_bias = _param((E, 2 * I), torch.float32, device)
            self.w2_bias = _param((E, H), torch.float32, device)

    def _take(self):
        experts = getattr(self, "experts", None)
        if not isinstance(experts, torch.nn.ModuleList):
            return super()._take()
        # ModelOpt's per-expert tensors: stacked into the canonical fused tensors (gate rows, then up).
        if any(isinstance(getattr(self, n, None), torch.Tensor) for r in _REQUIRED for n in self.aliases(r)):
            raise InvalidArgumentError("the module holds both per-expert tensors (experts.{e}.gate_proj...) and fused "
                                       "ones (w13_weight...); keep one")
        if len(experts) != self.num_experts:
            raise InvalidArgumentError(f"experts: {len(experts)} modules, the layer has {self.num_experts} experts")

        def stack(attr):
            return (torch.stack([torch.cat([getattr(x.gate_proj, attr).data, getattr(x.up_proj, attr).data])
                                 for x in experts]),
                    torch.stack([getattr(x.down_proj, attr).data for x in experts]))

        def scalars(proj, attr="weight_scale_2"):
            return [getattr(getattr(x, proj), attr).data.reshape(-1) for x in experts]

        w13, w2 = stack("weight")
        s13, s2 = stack("weight_scale")
        g13 = torch.stack([torch.cat([g, u]) for g, u in zip(scalars("gate_proj"), scalars("up_proj"))])
        g2 = torch.stack(scalars("down_proj"))
        taken = dict(w13=w13, w13_scale=s13, w2=w2, w2_scale=s2, w13_global_scale=g13, w2_global_scale=g2,
                     w13_bias=None, w2_bias=None)
        for role in ("w13_bias", "w2_bias"):
            name = self._find(role, False)
            taken[role] = None if name is None else getattr(self, name).data
        del self.experts  # the stacked copies are prepared in place; the per-expert ones go

        def restore():
            self.experts = experts
        return taken, restore

    def _prepare(self, taken) -> PreparedWeights:
        return prepare(taken["w13"], taken["w13_scale"], taken["w2"], taken["w2_scale"], taken["w13_bias"],
                       taken["w2_bias"], w13_global_scale=taken["w13_global_scale"],
                       w2_global_scale=taken["w2_global_scale"], activation_dtype=self.params_dtype, inplace=True)

    def _after_prepare(self):
        for name in self._INPUT_SCALES:  # static activation scales: mxmoe keeps activations 16-bit
            if hasattr(self, name):
                delattr(self, name)
        for role in ("w13_bias", "w2_bias"):  # per-expert layout: biases stay registered until here
            name = self._find(role, False)
            if name is not None:
                delattr(self, name)
