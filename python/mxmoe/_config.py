"""The activation and routing names of the torch API, mapped to the C ABI's codes (include/mxmoe/c_api.h)."""
from __future__ import annotations

from dataclasses import dataclass

from ._capi import InvalidArgumentError

# Activation kinds: 0 silu(g)*u, 1 DeepSeek V4 clamped silu, 2 gpt-oss SwiGLU.
_SILU = ("silu", "swiglu", "silu_and_mul")
_CLAMPED = ("clamped_silu", "deepseek_v4")
_GPT_OSS = ("swigluoai", "gpt_oss", "gpt-oss", "swiglu_oai")
ACTIVATIONS = _SILU + _CLAMPED + _GPT_OSS


@dataclass(frozen=True)
class ActivationSpec:
    kind: int
    limit: float
    alpha: float


def activation(name: str, clamp_limit=None, swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0) -> ActivationSpec:
    """'silu' (with clamp_limit: the DeepSeek V4 clamp), 'clamped_silu'/'deepseek_v4' (clamp_limit
    required), 'swigluoai'/'gpt_oss' (alpha, limit)."""
    key = str(name).lower()
    if key in _SILU:
        return ActivationSpec(0, 0.0, 1.702) if clamp_limit is None else ActivationSpec(1, float(clamp_limit), 1.702)
    if key in _CLAMPED:
        if clamp_limit is None:
            raise InvalidArgumentError(f"activation '{name}' needs clamp_limit (DeepSeek V4 uses 10.0)")
        return ActivationSpec(1, float(clamp_limit), 1.702)
    if key in _GPT_OSS:
        return ActivationSpec(2, float(swiglu_limit), float(swiglu_alpha))
    raise InvalidArgumentError(f"activation '{name}' is not supported; expected one of {', '.join(ACTIVATIONS)}")


# Routing modes: 0 softmax, 1 gpt-oss (softmax over the top-k logits), 2 DeepSeek V3, 3 DeepSeek V4.
ROUTING_MODES = {"softmax": 0, "gpt_oss": 1, "gpt-oss": 1, "softmax_topk": 1, "deepseek_v3": 2,
                 "sigmoid_grouped": 2, "deepseek_v4": 3, "sqrt_softplus": 3}


def routing_mode(name: str) -> int:
    key = str(name).lower()
    if key not in ROUTING_MODES:
        raise InvalidArgumentError(f"routing '{name}' is not supported; expected one of {', '.join(ROUTING_MODES)}")
    return ROUTING_MODES[key]
