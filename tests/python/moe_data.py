"""Shared helpers of the Python tests: random canonical MXFP4 and NVFP4 layers, random routing, and
torch references of the fused MoE written here (fp32 for MXFP4, float64 for both formats),
independently of the C++ oracle."""
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


# The activations the ops take, as (kind for activation() and the references, the op's keyword
# arguments): the parametrisation every forward test shares.
ACTIVATION_CASES = [
    ("silu", dict(activation="silu")),
    ("clamped", dict(activation="silu", clamp_limit=0.5)),
    ("gpt", dict(activation="swigluoai", swiglu_alpha=1.702, swiglu_limit=0.5)),
]


def activation(g, u, kind, limit=0.0, alpha=1.702):
    if kind == "silu":
        return torch.nn.functional.silu(g) * u
    if kind == "clamped":
        g, u = g.clamp(max=limit), u.clamp(-limit, limit)
        return torch.nn.functional.silu(g) * u
    g, u = g.clamp(max=limit), u.clamp(-limit, limit)
    return (u + 1) * g * torch.sigmoid(alpha * g)


def reference_moe(layer, hidden, ids, weights, kind="silu", limit=0.0, alpha=1.702):
    """The layer's forward with the bf16 rounding of the intermediate, -1 ids skipped; bf16 [T, H]: the
    float64 reference below (one implementation of the semantics serves every format)."""
    return reference_moe_f64(layer, hidden, ids, weights, kind, limit, alpha)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; NaN or inf anywhere in a gives inf (never passes)."""
    a64, b64 = a.double(), b.double()
    if not torch.isfinite(a64).all():
        return float("inf")
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------------------- NVFP4
def decode_ue4m3(b: torch.Tensor) -> torch.Tensor:
    """UE4M3 bytes (E4M3, sign bit clear: exponent bias 7, 3 mantissa bits, exponent 0 subnormal) as float64."""
    b = b.long()
    e, m = (b >> 3) & 15, (b & 7).double()
    normal = (1 + m / 8) * torch.exp2((e - 7).double())
    return torch.where(e == 0, m / 8 * 2.0 ** -6, normal)


def random_nvfp4_layer(E=8, H=256, I=128, *, bias=False, seed=0):
    """Canonical NVFP4 tensors: packed codes uniform over all 16, UE4M3 scale bytes 0x10..0x20 (2^-5..2^-3)
    with a few subnormal ones (0x01..0x07), global scales 2^U(-1, 1): fp16 intermediates stay far from
    65504. w13_global_scale [E, 2] (gate, up), w2_global_scale [E]."""
    g = torch.Generator().manual_seed(seed)
    w13 = torch.randint(0, 256, (E, 2 * I, H // 2), generator=g, dtype=torch.uint8)
    w2 = torch.randint(0, 256, (E, H, I // 2), generator=g, dtype=torch.uint8)

    def scales(shape):
        s = torch.randint(0x10, 0x21, shape, generator=g).to(torch.uint8)
        sub = torch.rand(shape, generator=g) < 0.05
        return torch.where(sub, torch.randint(1, 8, shape, generator=g).to(torch.uint8), s)

    s13, s2 = scales((E, 2 * I, H // 16)), scales((E, H, I // 16))
    g13 = torch.exp2(torch.rand(E, 2, generator=g) * 2 - 1)
    g2 = torch.exp2(torch.rand(E, generator=g) * 2 - 1)
    b13 = torch.randn(E, 2 * I, generator=g) * 0.1 if bias else None
    b2 = torch.randn(E, H, generator=g) * 0.1 if bias else None
    return dict(w13=w13, w13_scale=s13, w2=w2, w2_scale=s2, w13_bias=b13, w2_bias=b2, w13_global_scale=g13,
                w2_global_scale=g2)


def _dequant_f64(packed, scales, group, scale_values):
    E, R, half = packed.shape
    codes = torch.stack([packed & 15, packed >> 4], dim=-1).reshape(E, R, 2 * half).long()
    return E2M1.double()[codes] * scale_values(scales).repeat_interleave(group, dim=-1)


def reference_moe_f64(layer, hidden, ids, weights, kind="silu", limit=0.0, alpha=1.702):
    """The documented semantics in float64, for MXFP4 (E8M0 scales, group 32) and NVFP4 (UE4M3, group 16,
    global scales): a row's output is global x dot(e2m1 x scale, x) (+ bias); the intermediate
    activation(gate, up) is rounded to hidden's dtype, the weighted sum over slots (-1 skipped) too."""
    dtype = hidden.dtype
    H = hidden.shape[1]
    nv = layer.get("w13_global_scale") is not None
    group = 16 if nv else 32
    decode = decode_ue4m3 if nv else (lambda s: torch.exp2(s.double() - 127))
    W13 = _dequant_f64(layer["w13"], layer["w13_scale"], group, decode)
    W2 = _dequant_f64(layer["w2"], layer["w2_scale"], group, decode)
    E, two_i, _ = W13.shape
    I = two_i // 2
    if nv:
        g13 = layer["w13_global_scale"].double().reshape(E, -1).expand(E, 2)
        W13 = W13 * g13.repeat_interleave(I, dim=1)[:, :, None]
        W2 = W2 * layer["w2_global_scale"].double().reshape(E, 1, 1)
    x = hidden.double()
    out = torch.zeros(x.shape[0], H, dtype=torch.float64)
    for e in range(E):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        h = x[tok] @ W13[e].T
        if layer.get("w13_bias") is not None:
            h = h + layer["w13_bias"][e].double()
        a = activation(h[:, :I], h[:, I:], kind, limit, alpha).to(dtype).double()
        y = a @ W2[e].T
        if layer.get("w2_bias") is not None:
            y = y + layer["w2_bias"][e].double()
        out.index_add_(0, tok, y * weights[tok, slot].double()[:, None])
    return out.to(dtype)


def wide_e8m0_layer(E=4, H=512, I=64, *, seed=0):
    """An MXFP4 layer whose w13 scale bytes cover every E8M0 byte 0..254, and hidden states that keep
    each product finite: K group g of w13 has bytes c_g - 8..c_g + 8 (c_g = 8..246 over the 16 groups
    of H = 512) and hidden values 2^(127 - c_g) x N(0, 1) there, so every group contributes alike.
    Blocks with byte 253 or 254 hold codes of magnitude <= 1.5 (larger ones overflow float32). w2's
    bytes lie near 107 (2^-20), bringing the outputs back to O(1)."""
    assert H == 512
    g = torch.Generator().manual_seed(seed)
    groups = H // 32
    centers = torch.tensor([8 + round(i * 238 / (groups - 1)) for i in range(groups)])
    s13 = (centers + torch.randint(-8, 9, (E, 2 * I, groups), generator=g)).clamp(0, 254).to(torch.uint8)
    # Every byte at least once: byte b goes to a row of the group whose window holds it.
    for b in range(255):
        gi = int((centers - b).abs().argmin())
        e, r = b % E, (b * 7) % (2 * I)
        s13[e, r, gi] = b
    w13 = torch.randint(0, 256, (E, 2 * I, H // 2), generator=g, dtype=torch.uint8)
    big = (s13 >= 253).repeat_interleave(16, dim=-1)  # the block's 16 bytes
    w13 = torch.where(big, w13 & 0xBB, w13)
    w2 = torch.randint(0, 256, (E, H, I // 2), generator=g, dtype=torch.uint8)
    s2 = torch.randint(105, 110, (E, H, I // 32), generator=g).to(torch.uint8)
    layer = dict(w13=w13, w13_scale=s13, w2=w2, w2_scale=s2, w13_bias=None, w2_bias=None)
    hidden_scale = torch.exp2((127 - centers).double()).repeat_interleave(32)
    return layer, hidden_scale


def wide_hidden(T, hidden_scale, *, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, hidden_scale.shape[0], generator=g, dtype=torch.float64) * hidden_scale).to(torch.bfloat16)


# -------------------------------------------------------------------------------------------- W4A8
def fp8_rows(x: torch.Tensor):
    """Each row of x (values an fp32 holds: bf16 inputs) quantised to E4M3 as include/mxmoe/reference.hpp
    fixes it (formats/e4m3.hpp, fp8_row_scale and fp8_quantize), every step in fp32 as the oracle does it:
    s = amax / 448 (at least 2^-126; 1 when amax is 0), q = e4m3(x x fp32(1 / s)), round to nearest even,
    saturating at +-448 (the clamp: torch's cast would give NaN from 480 up). Returns (q, s) as float64:
    q the E4M3 values [rows, K], s [rows, 1]; the row's value is q x s."""
    e4m3 = getattr(torch, "float8_e4m3fn")
    x = x.to(torch.float32)
    amax = x.abs().amax(dim=1, keepdim=True)
    s = torch.where(amax > 0, (amax / 448.0).clamp_min(2.0 ** -126), torch.ones_like(amax))
    inv = 1.0 / s  # fp32: the reciprocal rounded once, then one multiply per element
    q = (x * inv).clamp(-448.0, 448.0).to(e4m3).to(torch.float64)
    return q, s.double()


def reference_moe_w4a8_f64(layer, hidden, ids, weights, kind="silu", limit=0.0, alpha=1.702):
    """W4A8 (FP8 per-token activations) in float64, written from the semantics of
    include/mxmoe/reference.hpp (ActivationPrecision::Fp8PerToken), independently of the C++ oracle:
    each token's hidden row quantised to E4M3 (fp8_rows); each MXFP4 weight dequantised exactly (the
    oracle's fold to E4M3 x 2^base per row is exact when a row's E8M0 bytes span at most 15 values, as in
    random_layer's 5); h = dot(W13 row, q) x s (+ bias); the intermediate activation(gate, up) rounded to
    bf16, then each (token, slot) row quantised like the hidden rows; y = dot(W2 row, q_a) x s_a (+ bias);
    weighted sum over slots (-1 skipped), rounded to bf16."""
    assert layer.get("w13_global_scale") is None, "W4A8 takes MXFP4 weights"
    H = hidden.shape[1]
    decode = lambda s: torch.exp2(s.double() - 127)  # noqa: E731
    W13 = _dequant_f64(layer["w13"], layer["w13_scale"], 32, decode)
    W2 = _dequant_f64(layer["w2"], layer["w2_scale"], 32, decode)
    E, two_i, _ = W13.shape
    I = two_i // 2
    xq, xs = fp8_rows(hidden)
    out = torch.zeros(hidden.shape[0], H, dtype=torch.float64)
    for e in range(E):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        h = (xq[tok] @ W13[e].T) * xs[tok]
        if layer.get("w13_bias") is not None:
            h = h + layer["w13_bias"][e].double()
        a = activation(h[:, :I], h[:, I:], kind, limit, alpha).to(torch.bfloat16)
        aq, as_ = fp8_rows(a)
        y = (aq @ W2[e].T) * as_
        if layer.get("w2_bias") is not None:
            y = y + layer["w2_bias"][e].double()
        out.index_add_(0, tok, y * weights[tok, slot].double()[:, None])
    return out.to(torch.bfloat16)
