"""The fused MoE forward of the torch API, with the argument conventions of vLLM's fused_marlin_moe
and SGLang's Marlin MoE runner (topk_weights/topk_ids from the engine's router, expert_map for
expert parallelism, routed_scaling_factor, apply_router_weight_on_input, clamp_limit)."""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks, _config
from ._capi import InvalidArgumentError
from ._prepare import PreparedWeights

_ID_DTYPES = (torch.int32, torch.int64)
_WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _localise(topk_ids, expert_map, prepared, global_num_experts):
    """Global ids -> the local experts of `prepared` through expert_map; -1 (not here) stays -1."""
    _checks.tensor(expert_map, "expert_map", _ID_DTYPES, ndim=1)
    _checks.same_device(prepared.device, expert_map=expert_map)
    if global_num_experts not in (-1, None) and expert_map.shape[0] != global_num_experts:
        raise InvalidArgumentError(f"expert_map has {expert_map.shape[0]} entries, global_num_experts is "
                                   f"{global_num_experts}")
    ids = topk_ids.long()
    mapped = expert_map.to(torch.int32)[ids.clamp(0, expert_map.shape[0] - 1)]
    return torch.where((ids >= 0) & (ids < expert_map.shape[0]), mapped, torch.full_like(mapped, -1))


def _check_ids(ids, num_experts, name):
    bad = (ids < -1) | (ids >= num_experts)
    if bool(bad.any()):
        at = _checks.first_index(bad)
        raise InvalidArgumentError(f"{name}: id {int(ids[tuple(at)])} at [token, slot] {at} is outside -1.."
                                   f"{num_experts - 1} (the prepared experts); pass expert_map to map global ids "
                                   f"to local ones")


def _hidden_for(hidden_states, prepared):
    """hidden_states checked against the prepared weights: [T, H] with their H, in a dtype they run
    (bf16; NVFP4 also fp16)."""
    if not isinstance(prepared, PreparedWeights):
        raise InvalidArgumentError(f"prepared: expected mxmoe.torch.PreparedWeights (from mxmoe.torch.prepare), "
                                   f"got {type(prepared).__name__}")
    hidden = _checks.activations(hidden_states, "hidden_states", prepared)
    if hidden.shape[1] != prepared.hidden_size:
        raise _checks.ShapeError(f"hidden_states: hidden size {hidden.shape[1]}, the prepared weights have "
                                 f"{prepared.hidden_size}")
    return hidden


def _out_for(out, hidden):
    """The caller's out ([T, H] in hidden's dtype, contiguous, checked) or a new tensor."""
    if out is None:
        return torch.empty_like(hidden, memory_format=torch.contiguous_format)
    _checks.tensor(out, "out", (hidden.dtype,), shape=tuple(hidden.shape))
    if not out.is_contiguous():
        raise InvalidArgumentError("out: must be contiguous")
    return out


def fused_moe(hidden_states: torch.Tensor, prepared: PreparedWeights, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, activation: str = "silu", expert_map: Optional[torch.Tensor] = None,
              out: Optional[torch.Tensor] = None, global_num_experts: int = -1,
              apply_router_weight_on_input: bool = False, routed_scaling_factor: Optional[float] = None,
              clamp_limit: Optional[float] = None, swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
              inplace: bool = False, check_ids: Optional[bool] = None, batch_invariant: bool = False) -> torch.Tensor:
    """out[t] = sum_s topk_weights[t, s] * expert_{topk_ids[t, s]}(hidden_states[t]), [T, H] in
    hidden_states' dtype: bf16 (MXFP4), bf16 or fp16 (NVFP4).

    activation: 'silu' (+ clamp_limit: DeepSeek V4's clamp), 'swigluoai'/'gpt_oss' (swiglu_alpha,
    swiglu_limit). expert_map [global E]: global -> local id, -1 = not on this rank (skipped).
    inplace writes the result into hidden_states. check_ids (default: eager CPU only, as on CUDA it
    would synchronise the host) refuses ids outside -1..E-1; unchecked, such ids contribute nothing.
    batch_invariant: a token's output bit-identical whatever batch it rides in (deterministic
    inference): on CUDA the mma.sync kernels only, no K split; costs nothing at 1-2 tokens and the
    compute-bound path's lead from 36 routed pairs per expert up.
    The activation precision is the prepared weights' (prepare's act): with "fp8" (W4A8) each token's
    hidden row and each intermediate row are quantised to E4M3 inside the op (CPU: the oracle's FP8
    mode; CUDA: the W4A8 kernels, on the same plan, batch_invariant included)."""
    hidden = _hidden_for(hidden_states, prepared)
    fp8 = prepared.fp8_activations
    T = hidden.shape[0]
    _checks.tensor(topk_ids, "topk_ids", _ID_DTYPES, ndim=2)
    _checks.tensor(topk_weights, "topk_weights", _WEIGHT_DTYPES, shape=tuple(topk_ids.shape))
    if topk_ids.shape[0] != T:
        raise _checks.ShapeError(f"topk_ids: {topk_ids.shape[0]} rows, hidden_states has {T} tokens")
    _checks.same_device(prepared.device, hidden_states=hidden, topk_ids=topk_ids, topk_weights=topk_weights, out=out)
    act = _config.activation(activation, clamp_limit, swiglu_alpha, swiglu_limit)
    if inplace:
        if out is not None:
            raise InvalidArgumentError("pass either out or inplace=True, not both")
        out = hidden_states
    out = _out_for(out, hidden)

    ids = topk_ids if expert_map is None else _localise(topk_ids, expert_map, prepared, global_num_experts)
    # A data-dependent check: eager CPU only by default (on CUDA it would synchronise the host; under
    # torch.compile it cannot be traced).
    if check_ids or (check_ids is None and ids.device.type == "cpu" and expert_map is None
                     and not torch.compiler.is_compiling()):
        _check_ids(ids, prepared.num_experts, "topk_ids")
    ids = ids.to(torch.int32).contiguous()
    weights = topk_weights.to(torch.float32)
    if routed_scaling_factor is not None:
        weights = weights * routed_scaling_factor
    if apply_router_weight_on_input:
        if ids.shape[1] != 1:
            raise InvalidArgumentError(f"apply_router_weight_on_input needs top_k 1, got {ids.shape[1]}")
        hidden = (hidden.float() * weights).to(hidden.dtype)
        weights = torch.ones_like(weights)
    weights = weights.contiguous()
    hidden = hidden.contiguous()
    torch.ops.mxmoe.fused_moe(hidden, prepared.w13, prepared.w13_scale, prepared.w2, prepared.w2_scale,
                              prepared.w13_bias, prepared.w2_bias, prepared.w13_global_scale,
                              prepared.w2_global_scale, ids, weights, prepared.intermediate_size, prepared.group,
                              prepared.max_scale_byte, act.kind, act.limit, act.alpha, out, bool(batch_invariant), fp8)
    return out


def route(router_logits: torch.Tensor, top_k: int, *, routing: str = "softmax", renormalize: bool = True,
          num_expert_group: int = 1, topk_group: int = 1, routed_scaling_factor: float = 1.0,
          correction_bias: Optional[torch.Tensor] = None):
    """(topk_weights fp32 [T, k], topk_ids int32 [T, k]) from router logits [T, E], by the modes of
    mxmoe's RoutingConfig: 'softmax', 'gpt_oss', 'deepseek_v3' (grouped sigmoid + correction bias),
    'deepseek_v4' (sqrt-softplus + correction bias)."""
    _checks.tensor(router_logits, "router_logits", (torch.float32, torch.bfloat16, torch.float16), ndim=2)
    if correction_bias is not None:
        _checks.tensor(correction_bias, "correction_bias", _checks.FLOAT_DTYPES, shape=(router_logits.shape[1],))
        _checks.same_device(router_logits.device, correction_bias=correction_bias)
        correction_bias = correction_bias.to(torch.float32).contiguous()
    ids, weights = torch.ops.mxmoe.route(router_logits.to(torch.float32).contiguous(), correction_bias,
                                         _config.routing_mode(routing), int(top_k), bool(renormalize),
                                         int(num_expert_group), int(topk_group), float(routed_scaling_factor))
    return weights, ids


def fused_moe_from_logits(hidden_states: torch.Tensor, prepared: PreparedWeights, router_logits: torch.Tensor,
                          top_k: int, *, routing: str = "softmax", renormalize: bool = True,
                          num_expert_group: int = 1, topk_group: int = 1, routed_scaling_factor: float = 1.0,
                          correction_bias: Optional[torch.Tensor] = None, activation: str = "silu",
                          out: Optional[torch.Tensor] = None, clamp_limit: Optional[float] = None,
                          swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
                          batch_invariant: bool = False) -> torch.Tensor:
    """Routing from router logits [T, E] and the fused MoE in one op (torch.ops.mxmoe.fused_moe_from_logits);
    routing as in route(), activation and batch_invariant arguments as in fused_moe(), and the activation
    precision the prepared weights' (fp8: W4A8). With expert parallelism, route with route() and pass
    expert_map to fused_moe()."""
    hidden = _hidden_for(hidden_states, prepared).contiguous()
    fp8 = prepared.fp8_activations
    T = hidden.shape[0]
    _checks.tensor(router_logits, "router_logits", (torch.float32, torch.bfloat16, torch.float16),
                   shape=(T, prepared.num_experts))
    _checks.same_device(prepared.device, hidden_states=hidden, router_logits=router_logits,
                        correction_bias=correction_bias, out=out)
    if correction_bias is not None:
        _checks.tensor(correction_bias, "correction_bias", _checks.FLOAT_DTYPES, shape=(prepared.num_experts,))
        correction_bias = correction_bias.to(torch.float32).contiguous()
    act = _config.activation(activation, clamp_limit, swiglu_alpha, swiglu_limit)
    out = _out_for(out, hidden)
    torch.ops.mxmoe.fused_moe_from_logits(
        hidden, prepared.w13, prepared.w13_scale, prepared.w2, prepared.w2_scale, prepared.w13_bias, prepared.w2_bias,
        prepared.w13_global_scale, prepared.w2_global_scale, router_logits.to(torch.float32).contiguous(),
        correction_bias, _config.routing_mode(routing), int(top_k), bool(renormalize), int(num_expert_group),
        int(topk_group), float(routed_scaling_factor), prepared.intermediate_size, prepared.group,
        prepared.max_scale_byte, act.kind, act.limit, act.alpha, out, bool(batch_invariant), fp8)
    return out
