"""torch ops on the CPU (the oracle) against the fp32 torch reference of moe_data.py.

Tolerance: the oracle and the reference both accumulate exactly dequantised weights in fp32 (in a
different order) and round the intermediate and the output to bf16; a rounding flip of the
intermediate costs at most 2^-8 relative on one term, the output rounding 2^-9 per element, so the
norm-wise relative error stays below 1e-2 (observed: about 2e-3). NaN never passes (rel_err)."""
import pytest
import torch

import mxmoe
from mxmoe import torch as mt
from moe_data import ACTIVATION_CASES, random_layer, random_tokens, reference_moe, rel_err

TOL = 1e-2


@pytest.mark.parametrize("kind,act_kwargs", ACTIVATION_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_fused_moe_matches_reference(kind, act_kwargs, bias):
    layer = random_layer(bias=bias, seed=3)
    prepared = mt.prepare(**layer)
    hidden, ids, weights = random_tokens(24, 256, 8, 3, seed=4)
    out = mt.fused_moe(hidden, prepared, weights, ids, **act_kwargs)
    limit = act_kwargs.get("clamp_limit", act_kwargs.get("swiglu_limit", 0.0))
    ref = reference_moe(layer, hidden, ids, weights, kind, limit)
    assert out.dtype == torch.bfloat16 and out.shape == hidden.shape
    assert ref.abs().max() > 0
    assert rel_err(out, ref) < TOL


def test_out_argument_is_written_and_returned():
    layer = random_layer(seed=5)
    prepared = mt.prepare(**layer)
    hidden, ids, weights = random_tokens(5, 256, 8, 2, seed=6)
    out = torch.full_like(hidden, float("nan"))  # poisoned
    result = mt.fused_moe(hidden, prepared, weights, ids, out=out)
    assert result is out
    assert torch.equal(out, mt.fused_moe(hidden, prepared, weights, ids))


def test_skewed_routing_and_int64_ids_and_bf16_weights():
    layer = random_layer(E=16, H=128, I=64, seed=7)
    prepared = mt.prepare(**layer)
    hidden, ids, weights = random_tokens(40, 128, 16, 4, seed=8, skew=True)
    out = mt.fused_moe(hidden, prepared, weights.to(torch.bfloat16), ids.long())
    ref = reference_moe(layer, hidden, ids, weights.to(torch.bfloat16).float())
    assert rel_err(out, ref) < TOL


def test_routed_scaling_and_router_weight_on_input():
    layer = random_layer(seed=9)
    prepared = mt.prepare(**layer)
    hidden, ids, weights = random_tokens(6, 256, 8, 2, seed=10)
    scaled = mt.fused_moe(hidden, prepared, weights, ids, routed_scaling_factor=2.5)
    assert rel_err(scaled, reference_moe(layer, hidden, ids, weights * 2.5)) < TOL
    ids1, w1 = ids[:, :1].contiguous(), weights[:, :1].contiguous()
    on_input = mt.fused_moe(hidden, prepared, w1, ids1, apply_router_weight_on_input=True)
    x = (hidden.float() * w1).to(torch.bfloat16)
    assert rel_err(on_input, reference_moe(layer, x, ids1, torch.ones_like(w1))) < TOL


def test_expert_map_skips_experts_of_other_ranks():
    layer = random_layer(E=4, seed=11)  # the local experts: global 4..7 of 8
    prepared = mt.prepare(**layer)
    hidden, ids, weights = random_tokens(20, 256, 8, 3, seed=12)
    expert_map = torch.full((8,), -1, dtype=torch.int32)
    expert_map[4:] = torch.arange(4, dtype=torch.int32)
    out = mt.fused_moe(hidden, prepared, weights, ids, expert_map=expert_map, global_num_experts=8)
    local = torch.where(ids >= 4, ids - 4, torch.full_like(ids, -1))
    assert (local == -1).any() and (local >= 0).any()
    assert rel_err(out, reference_moe(layer, hidden, local, weights)) < TOL


def test_prepare_leaves_inputs_untouched():
    layer = random_layer(seed=13)
    layer["w13_scale"] = torch.exp2(layer["w13_scale"].float() - 127)
    before = {k: v.clone() for k, v in layer.items() if v is not None}
    mt.prepare(**layer)
    for k, v in before.items():
        assert torch.equal(layer[k], v), k


@pytest.mark.parametrize("mode,kwargs", [
    ("softmax", dict(renormalize=True)),
    ("softmax", dict(renormalize=False)),
    ("gpt_oss", {}),
    ("deepseek_v4", dict(routed_scaling_factor=1.5)),
])
def test_route_matches_torch(mode, kwargs):
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(32, 16, generator=g)
    weights, ids = mt.route(logits, 4, routing=mode, **kwargs)
    if mode == "softmax":
        p = logits.softmax(-1)
        ref_w, ref_i = p.topk(4, dim=-1)
        if kwargs["renormalize"]:
            ref_w = ref_w / ref_w.sum(-1, keepdim=True)
    elif mode == "gpt_oss":
        top, ref_i = logits.topk(4, dim=-1)
        ref_w = top.softmax(-1)
    else:
        s = torch.sqrt(torch.nn.functional.softplus(logits))
        top, ref_i = s.topk(4, dim=-1)
        ref_w = top / top.sum(-1, keepdim=True) * 1.5
    assert torch.equal(ids.long(), ref_i)
    assert torch.allclose(weights, ref_w, rtol=1e-5, atol=1e-6)


def test_fused_moe_from_logits_is_route_then_forward():
    layer = random_layer(seed=15)
    prepared = mt.prepare(**layer)
    hidden, _, _ = random_tokens(9, 256, 8, 2, seed=16)
    logits = torch.randn(9, 8, generator=torch.Generator().manual_seed(17))
    out = mt.fused_moe_from_logits(hidden, prepared, logits, 2, routing="softmax")
    w, i = mt.route(logits, 2, routing="softmax")
    assert torch.equal(out, mt.fused_moe(hidden, prepared, w, i))


def test_batch_invariant_argument_reaches_every_entry_point():
    # The CPU oracle is batch-invariant by construction: a token's bits alone equal its bits in the
    # batch, with the flag or without; the flag is accepted by fused_moe, fused_moe_from_logits, the
    # module and the raw op (whose schema gives it a default).
    layer = random_layer(seed=21)
    prepared = mt.prepare(**layer)
    hidden, ids, weights = random_tokens(12, 256, 8, 2, seed=22)
    full = mt.fused_moe(hidden, prepared, weights, ids, batch_invariant=True)
    assert torch.equal(full, mt.fused_moe(hidden, prepared, weights, ids))
    for t in (0, 5, 11):
        alone = mt.fused_moe(hidden[t:t + 1], prepared, weights[t:t + 1], ids[t:t + 1], batch_invariant=True)
        assert torch.equal(alone[0], full[t]), t
    logits = torch.randn(12, 8, generator=torch.Generator().manual_seed(23))
    assert torch.equal(mt.fused_moe_from_logits(hidden, prepared, logits, 2, batch_invariant=True),
                       mt.fused_moe_from_logits(hidden, prepared, logits, 2))
    assert "batch_invariant" in str(torch.ops.mxmoe.fused_moe.default._schema)
    assert "batch_invariant" in str(torch.ops.mxmoe.fused_moe_from_logits.default._schema)


def test_torch_ops_are_registered():
    assert hasattr(torch.ops.mxmoe, "fused_moe") and hasattr(torch.ops.mxmoe, "route")
    assert mxmoe.cuda_compiled() in (True, False)


@pytest.mark.parametrize("act", ["bf16", "fp8"])
def test_torch_compile_fullgraph_cpu(act):
    layer = random_layer(E=4, H=128, I=64, seed=18)
    prepared = mt.prepare(**layer, act=act)
    hidden, _, _ = random_tokens(8, 128, 4, 2, seed=19)
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(20))

    def moe(x, logits):
        w, i = mt.route(logits, 2, routing="softmax")
        return mt.fused_moe(x, prepared, w, i) * 2 + mt.fused_moe_from_logits(x, prepared, logits, 2)

    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(hidden, logits), moe(hidden, logits))
    prep = torch.compile(lambda *t: torch.ops.mxmoe.prepare(*t), fullgraph=True, backend="aot_eager")
    assert all(torch.equal(a, b) for a, b in zip(prep(layer["w13"], layer["w13_scale"], layer["w2"], layer["w2_scale"], 32),
                                                (layer["w13"], layer["w13_scale"], layer["w2"], layer["w2_scale"])))
    torch._dynamo.reset()
