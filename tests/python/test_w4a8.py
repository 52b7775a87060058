"""W4A8 (FP8 per-token activations, issue 14) through the torch package on the CPU: prepare(act="fp8"),
the ops (the C++ oracle's FP8 mode through mxmoe_forward_cpu), the module flow, and the errors; also the
C ABI's W4A8 checks, which run before any device work. The CUDA side is in test_ops_cuda.py.

Tolerance against the float64 emulation (moe_data.reference_moe_w4a8_f64): it quantises with the same
fp32 steps as the oracle (s = amax / 448, the reciprocal rounded once, one multiply, E4M3 round to
nearest even), so both feed identical E4M3 values and scales to every dot product; the oracle then sums
them in fp32, the emulation in float64 (a relative difference near 1e-6 per dot product), which now and
then flips a bf16 rounding of the intermediate or of the output (2^-8 of that element) and, more rarely,
one E4M3 step (2^-4) of an intermediate element or a row's scale. Norm-wise that stays far below 1e-3
(observed: at most 2e-7, most outputs bit-identical), while the FP8 quantisation itself moves the output
by 2e-2..5e-2 from the bf16 forward, so TOL = 1e-3 tells the two modes apart. NaN never passes (rel_err)."""
import ctypes

import pytest
import torch

import mxmoe
from mxmoe import _capi
from mxmoe import torch as mt
from moe_data import (ACTIVATION_CASES, random_layer, random_nvfp4_layer, random_tokens, reference_moe_f64,
                      reference_moe_w4a8_f64, rel_err)

TOL = 1e-3
E, H, I = 8, 256, 128

pytestmark = pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="the emulation needs torch.float8_e4m3fn")


@pytest.mark.parametrize("kind,act_kwargs", ACTIVATION_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_fp8_cpu_op_matches_float64_emulation(kind, act_kwargs, bias):
    layer = random_layer(bias=bias, seed=3)
    prepared = mt.prepare(**layer, act="fp8")
    hidden, ids, weights = random_tokens(24, 256, 8, 3, seed=4)
    ids[5, 1] = -1  # a slot on no expert
    out = mt.fused_moe(hidden, prepared, weights, ids, **act_kwargs)
    limit = act_kwargs.get("clamp_limit", act_kwargs.get("swiglu_limit", 0.0))
    ref = reference_moe_w4a8_f64(layer, hidden, ids, weights, kind, limit)
    assert out.dtype == torch.bfloat16 and out.shape == hidden.shape
    assert ref.abs().max() > 0
    assert rel_err(out, ref) < TOL


@pytest.mark.parametrize("E_,H_,I_,k,T,skew", [(16, 512, 96, 4, 40, True), (4, 128, 64, 2, 1, False),
                                              (32, 320, 160, 6, 64, False)])
def test_fp8_shapes_and_skewed_routing(E_, H_, I_, k, T, skew):
    # K not a multiple of 64 (I = 96, H = 320), one token, skewed routing.
    layer = random_layer(E_, H_, I_, bias=True, seed=E_ + T)
    hidden, ids, weights = random_tokens(T, H_, E_, k, seed=T, skew=skew)
    out = mt.fused_moe(hidden, mt.prepare(**layer, act="fp8"), weights, ids)
    assert rel_err(out, reference_moe_w4a8_f64(layer, hidden, ids, weights)) < TOL


def test_fp8_differs_from_bf16_by_the_e4m3_error():
    # E4M3 keeps 3 mantissa bits: a uniform rounding error of up to 2^-4 relative per element, about
    # 2^-4 / sqrt(3) x 1/2 ~ 2e-2 rms per quantised operand; both GEMMs' inputs are quantised, so the
    # output moves by a few 1e-2 from the bf16 forward (the C++ GPU tests print ~4.7e-2), never NaN.
    layer = random_layer(bias=True, seed=5)
    hidden, ids, weights = random_tokens(32, 256, 8, 3, seed=6)
    fp8 = mt.fused_moe(hidden, mt.prepare(**layer, act="fp8"), weights, ids)
    bf16 = mt.fused_moe(hidden, mt.prepare(**layer), weights, ids)
    assert torch.isfinite(fp8.float()).all()
    err = rel_err(fp8, bf16)
    assert 1e-2 <= err <= 1e-1, err
    assert 1e-2 <= rel_err(fp8, reference_moe_f64(layer, hidden, ids, weights)) <= 1e-1


def test_prepared_weights_report_their_format():
    layer = random_layer(seed=7)
    fp8 = mt.prepare(**layer, act="fp8")
    assert fp8.format == "mxfp4-e4m3" and fp8.fp8_activations and fp8.activation_precision == "fp8"
    assert fp8.layout == "canonical" and fp8.w13_global_scale is None and fp8.w2_global_scale is None
    bf16 = mt.prepare(**layer, act="bf16")
    assert bf16.format == "mxfp4" and not bf16.fp8_activations and bf16.activation_precision == "bf16"
    assert mt.prepare(**layer).activation_precision == "bf16"
    assert mt.ACTIVATION_PRECISIONS == ("bf16", "fp8")


def test_fp8_from_logits_is_route_then_forward_and_batch_invariant():
    layer = random_layer(seed=8)
    prepared = mt.prepare(**layer, act="FP8")  # case-insensitive, as the other names
    hidden, _, _ = random_tokens(9, 256, 8, 2, seed=9)
    logits = torch.randn(9, 8, generator=torch.Generator().manual_seed(10))
    out = mt.fused_moe_from_logits(hidden, prepared, logits, 2, routing="softmax")
    w, i = mt.route(logits, 2, routing="softmax")
    full = mt.fused_moe(hidden, prepared, w, i)
    assert torch.equal(out, full)
    # The oracle's FP8 mode quantises per token and per routed pair: a token alone has its bits in the
    # batch, with batch_invariant (accepted in W4A8 by every entry point) or without.
    assert torch.equal(mt.fused_moe(hidden, prepared, w, i, batch_invariant=True), full)
    assert torch.equal(mt.fused_moe_from_logits(hidden, prepared, logits, 2, batch_invariant=True), out)
    for t in (0, 4, 8):
        alone = mt.fused_moe(hidden[t:t + 1], prepared, w[t:t + 1], i[t:t + 1], batch_invariant=True)
        assert torch.equal(alone[0], full[t]), t


def test_raw_op_keeps_its_old_signature_and_takes_fp8():
    layer = random_layer(seed=11)
    hidden, ids, weights = random_tokens(6, 256, 8, 2, seed=12)
    args = [hidden, layer["w13"], layer["w13_scale"], layer["w2"], layer["w2_scale"], None, None, None, None, ids,
            weights, I, 32, int(layer["w13_scale"].max()), 0, 0.0, 1.702]
    old, new = torch.empty_like(hidden), torch.empty_like(hidden)
    torch.ops.mxmoe.fused_moe(*args, old)  # no batch_invariant, no fp8: the old callers' form
    torch.ops.mxmoe.fused_moe(*args, new, False, True)
    assert torch.equal(old, mt.fused_moe(hidden, mt.prepare(**layer), weights, ids))
    assert torch.equal(new, mt.fused_moe(hidden, mt.prepare(**layer, act="fp8"), weights, ids))
    for op in (torch.ops.mxmoe.fused_moe, torch.ops.mxmoe.fused_moe_from_logits):
        assert "bool fp8=False" in str(op.default._schema)


def _load(module, layer):
    with torch.no_grad():
        module.w13_weight.copy_(layer["w13"])
        module.w2_weight.copy_(layer["w2"])
        module.w13_weight_scale.copy_(layer["w13_scale"])
        module.w2_weight_scale.copy_(layer["w2_scale"])
        if layer["w13_bias"] is not None:
            module.w13_bias.copy_(layer["w13_bias"])
            module.w2_bias.copy_(layer["w2_bias"])


def test_module_flow_fp8():
    layer = random_layer(E, H, I, bias=True, seed=16)
    module = mt.Mxfp4MoE(E, H, I, scale_dtype=torch.uint8, has_bias=True, activation_precision="fp8",
                         batch_invariant=True)
    _load(module, layer)
    module.process_weights_after_loading()
    assert module.prepared.format == "mxfp4-e4m3"
    hidden, ids, weights = random_tokens(12, H, E, 2, seed=17)
    out = module(hidden, weights, ids)
    assert torch.equal(out, mt.fused_moe(hidden, mt.prepare(**layer, act="fp8"), weights, ids))
    assert rel_err(out, reference_moe_w4a8_f64(layer, hidden, ids, weights)) < TOL


# ------------------------------------------------------------------------------------------ errors
def test_fp8_with_nvfp4_weights_is_refused():
    nv = random_nvfp4_layer(E, H, I, seed=18)
    with pytest.raises(NotImplementedError, match="act='fp8': FP8 activations \\(W4A8\\) take MXFP4 weights.*NVFP4"):
        mt.prepare(**nv, act="fp8")
    with pytest.raises(NotImplementedError, match="activation_precision='fp8'.*MXFP4.*NVFP4"):
        mt.Nvfp4MoE(E, H, I, activation_precision="fp8")
    # The raw op, group 16 with fp8: the C ABI's own refusal.
    hidden, ids, weights = random_tokens(2, H, E, 2, seed=19)
    out = torch.empty_like(hidden)
    with pytest.raises(mt.Error, match="fp8_activations.*take MXFP4 weights.*group 16 \\(NVFP4\\)"):
        torch.ops.mxmoe.fused_moe(hidden, nv["w13"], nv["w13_scale"], nv["w2"], nv["w2_scale"], None, None,
                                  nv["w13_global_scale"], nv["w2_global_scale"], ids, weights, I, 16, 0, 0, 0.0, 1.702,
                                  out, False, True)


def test_fp8_with_fp16_activations_is_refused():
    layer = random_layer(E, H, I, seed=20)
    with pytest.raises(TypeError, match="activation_dtype: float16 with MXFP4 weights"):
        mt.prepare(**layer, act="fp8", activation_dtype=torch.float16)
    prepared = mt.prepare(**layer, act="fp8")
    hidden, ids, weights = random_tokens(3, H, E, 2, seed=21)
    with pytest.raises(TypeError, match="hidden_states: dtype float16.*bfloat16"):
        mt.fused_moe(hidden.half(), prepared, weights, ids)
    # The raw op with fp16 hidden states and fp8: the C ABI names the W4A8 rule.
    with pytest.raises(TypeError, match="FP8 activations \\(W4A8.*quantised from bf16"):
        torch.ops.mxmoe.fused_moe(hidden.half(), layer["w13"], layer["w13_scale"], layer["w2"], layer["w2_scale"], None,
                                  None, None, None, ids, weights, I, 32, 127, 0, 0.0, 1.702,
                                  torch.empty_like(hidden.half()), False, True)


def test_other_fp8_misuse_names_the_fix():
    layer = random_layer(E, H, I, seed=22)
    with pytest.raises(ValueError, match="act: 'int8', expected 'bf16'.*or 'fp8'"):
        mt.prepare(**layer, act="int8")
    with pytest.raises(ValueError, match="activation_precision: 'e5m2'"):
        mt.Mxfp4MoE(E, H, I, activation_precision="e5m2")
    hidden, ids, weights = random_tokens(3, H, E, 2, seed=23)
    # The CPU oracle folds canonical weights itself: factors passed to it are refused.
    factors = torch.ones(E, 2 * I), torch.ones(E, H)
    with pytest.raises(ValueError, match="canonical MXFP4 weights without factors"):
        torch.ops.mxmoe.fused_moe(hidden, layer["w13"], layer["w13_scale"], layer["w2"], layer["w2_scale"], None, None,
                                  *factors, ids, weights, I, 32, 127, 0, 0.0, 1.702, torch.empty_like(hidden), False,
                                  True)
    with pytest.raises(NotImplementedError, match="CUDA kernels"):
        torch.ops.mxmoe.tile_experts_w4a8(layer["w2"], layer["w2_scale"], H, I, False,
                                          torch.empty(E, H * I // 2, dtype=torch.uint8),
                                          torch.empty(E, H * I // 32, dtype=torch.uint8), torch.empty(E, H))


# ------------------------------------------------------------------------------- the C ABI (ABI 6)
def _weights(**fields):
    fake = 1 << 20  # aligned, never read: the checks below run before any device work
    w = _capi.Weights(fake, fake, fake, fake, None, None, fake, fake, E, H, I, 32, 0, 127, 1)
    for k, v in fields.items():
        setattr(w, k, v)
    return w


def _message(status):
    assert status != 0
    with pytest.raises(mt.Error) as e:
        _capi.check(status)
    return str(e.value)


def test_c_abi_version_and_struct():
    assert _capi.lib.mxmoe_c_abi_version() == 6 == _capi.ABI_VERSION
    assert [f[0] for f in _capi.Weights._fields_][-1] == "fp8_activations"
    bad = _weights(fp8_activations=2)
    act = _capi.Activation(0, 0.0, 1.702)
    z = torch.zeros(1, H, dtype=torch.bfloat16)
    ids, w = torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, 1)
    assert "fp8_activations must be 0" in _message(_capi.lib.mxmoe_forward_cpu(
        ctypes.byref(bad), ctypes.byref(act), z.data_ptr(), ids.data_ptr(), w.data_ptr(), z.data_ptr(), 1, 1, 0))


@pytest.mark.skipif(not mxmoe.cuda_compiled(), reason="the CUDA entry points' checks are compiled with the CUDA backend")
def test_c_abi_cuda_entry_checks_fp8():
    fake = 1 << 20
    act = _capi.Activation(0, 0.0, 1.702)
    bf16 = ctypes.c_int64()
    assert _capi.lib.mxmoe_workspace_bytes(E, H, I, 64, 2, ctypes.byref(bf16)) == 0
    fp8 = ctypes.c_int64()
    assert _capi.lib.mxmoe_workspace_bytes_fp8(E, H, I, 64, 2, ctypes.byref(fp8)) == 0
    # The W4A8 workspace adds the E4M3 rows: T x H + pairs x I bytes, and a scale per row, at least.
    assert fp8.value >= bf16.value + 64 * H + 128 * I + 4 * (64 + 128)

    def forward(workspace_bytes=fp8.value, batch_invariant=0, **fields):
        w = _weights(**fields)
        return _capi.lib.mxmoe_forward_cuda(ctypes.byref(w), ctypes.byref(act), fake, fake, fake, fake, 64, 2, fake,
                                            workspace_bytes, None, batch_invariant)

    assert "w13_global_scale is null; FP8 activations (W4A8) need the row factors" in _message(
        forward(w13_global_scale=None))
    assert "w2_global_scale is null" in _message(forward(w2_global_scale=None, batch_invariant=1))
    assert "take MXFP4 weights (group 32, E8M0 scales), got group 16 (NVFP4)" in _message(forward(group=16))
    assert "quantised from bf16 hidden states" in _message(forward(f16_activations=1))
    assert "W4A8: mxmoe_workspace_bytes_fp8" in _message(forward(workspace_bytes=bf16.value))
    assert "rows must be a positive multiple of 16" in _message(_capi.lib.mxmoe_tile_experts_w4a8_cuda(
        fake, fake, 40, H, 0, E, fake, fake, fake, fake, None))
    assert "row_factor is null" in _message(_capi.lib.mxmoe_tile_experts_w4a8_cuda(
        fake, fake, 2 * I, H, 1, E, fake, fake, None, fake, None))


@pytest.mark.skipif(mxmoe.cuda_compiled(), reason="a build without CUDA says so")
def test_c_abi_no_cuda_build_refuses_the_w4a8_entry_points():
    n = ctypes.c_int64()
    with pytest.raises(NotImplementedError, match="no CUDA backend"):
        _capi.check(_capi.lib.mxmoe_workspace_bytes_fp8(E, H, I, 4, 2, ctypes.byref(n)))
    with pytest.raises(NotImplementedError, match="no CUDA backend"):
        _capi.check(_capi.lib.mxmoe_tile_experts_w4a8_cuda(None, None, 2 * I, H, 1, E, None, None, None, None, None))
