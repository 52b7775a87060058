"""Shared helpers of the Python tests: random canonical MXFP4 layers, random routing, and an fp32
torch reference of the fused MoE written here, independently of the C++ oracle."""
from __future__ import annotations

import torch

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def random_layer(E=8, H=256, I=128, *, bias=False, seed=0, scale_center=120):
    """Canonical fused tensors: packed codes uniform over all 16, E8M0 scale bytes near scale_center."""
    g = torch.Generator().manual_seed(seed)
    w13 = torch.randint(0, 256, (E, 2 * I, H // 2), generator=g, dtype=torch.uint8)
    w2 = torch.randint(0, 256, (E, H, I // 2), generator=g, dtype=torch.uint8)
    s13 = torch.randint(scale_center - 2, scale_center + 3, (E, 2 * I, H // 32), generator=g).to(torch.uint8)
    s2 = torch.randint(scale_center - 2, scale_center + 3, (E, H, I // 32), generator=g).to(torch.uint8)
    b13 = torch.randn(E, 2 * I, generator=g) * 0.1 if bias else None
    b2 = torch.randn(E, H, generator=g) * 0.1 if bias else None
    return dict(w13=w13, w13_scale=s13, w2=w2, w2_scale=s2, w13_bias=b13, w2_bias=b2)


def random_tokens(T, H, E, k, *, seed=1, skew=False):
    """bf16 hidden [T, H], distinct int32 ids [T, k] (skewed: mostly experts 0 and 1), fp32 weights."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=g).to(torch.bfloat16)
    if skew:
        scores = torch.rand(T, E, generator=g) + torch.linspace(2, 0, E)
    else:
        scores = torch.rand(T, E, generator=g)
    ids = scores.topk(k, dim=1).indices.to(torch.int32)
    weights = torch.rand(T, k, generator=g) + 0.1
    return hidden, ids, weights / weights.sum(1, keepdim=True)


def dequant(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    E, R, half = packed.shape
    codes = torch.stack([packed & 15, packed >> 4], dim=-1).reshape(E, R, 2 * half).long()
    scale = torch.exp2(scales.float() - 127).repeat_interleave(32, dim=-1)
    return E2M1[codes] * scale


def activation(g, u, kind, limit=0.0, alpha=1.702):
    if kind == "silu":
        return torch.nn.functional.silu(g) * u
    if kind == "clamped":
        g, u = g.clamp(max=limit), u.clamp(-limit, limit)
        return torch.nn.functional.silu(g) * u
    g, u = g.clamp(max=limit), u.clamp(-limit, limit)
    return (u + 1) * g * torch.sigmoid(alpha * g)


def reference_moe(layer, hidden, ids, weights, kind="silu", limit=0.0, alpha=1.702):
    """fp32 forward with the bf16 rounding of the intermediate, -1 ids skipped; bf16 [T, H]."""
    W13, W2 = dequant(layer["w13"], layer["w13_scale"]), dequant(layer["w2"], layer["w2_scale"])
    E, two_i, H = W13.shape
    I = two_i // 2
    x = hidden.float()
    out = torch.zeros(x.shape[0], H)
    for e in range(E):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        h = x[tok] @ W13[e].T
        if layer.get("w13_bias") is not None:
            h = h + layer["w13_bias"][e].float()
        a = activation(h[:, :I], h[:, I:], kind, limit, alpha).to(torch.bfloat16).float()
        y = a @ W2[e].T
        if layer.get("w2_bias") is not None:
            y = y + layer["w2_bias"][e].float()
        out.index_add_(0, tok, y * weights[tok, slot].float()[:, None])
    return out.to(torch.bfloat16)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; NaN or inf anywhere in a gives inf (never passes)."""
    a64, b64 = a.double(), b.double()
    if not torch.isfinite(a64).all():
        return float("inf")
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))
