"""NVFP4 weights (UE4M3 scales per 16 + fp32 global scales, bf16 or fp16 activations) and MXFP4 with
every E8M0 byte, on the CPU (the oracle), against the float64 torch reference of moe_data.py
(reference_moe_f64: the documented semantics, written independently of the C++ code).

Tolerance: the oracle accumulates exactly dequantised weights in fp32 and applies the global scale
to the fp32 dot product; the reference does the same in float64. Both round the intermediate to the
activation dtype (a flip costs one ulp on one element: 2^-8 relative in bf16, 2^-11 in fp16) and the
output (2^-9 / 2^-12 relative per element). Norm-wise bounds: 1e-2 in bf16 and 2e-3 in fp16, a few
flips' worth; observed at most 4e-5 (the two round the same fp32/float64 sums to mostly the same
16-bit values). NaN or inf never pass (rel_err)."""
import pytest
import torch

from mxmoe import torch as mt
from moe_data import (ACTIVATION_CASES, _dequant_f64, random_layer, random_nvfp4_layer, random_tokens, reference_moe_f64,
                      rel_err, wide_e8m0_layer, wide_hidden)

TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
DTYPES = [torch.bfloat16, torch.float16]
E, H, I = 8, 256, 128


def nv_prepare(layer, **kw):
    return mt.prepare(**layer, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind,act_kwargs", ACTIVATION_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_nvfp4_matches_float64_reference(dtype, kind, act_kwargs, bias):
    layer = random_nvfp4_layer(E, H, I, bias=bias, seed=41)
    prepared = nv_prepare(layer)
    assert prepared.group == 16 and prepared.format == "nvfp4" and prepared.activation_dtype is None
    hidden, ids, weights = random_tokens(24, H, E, 3, seed=42)
    hidden = hidden.to(dtype)
    ids[0, 0] = -1
    out = mt.fused_moe(hidden, prepared, weights, ids, **act_kwargs)
    limit = act_kwargs.get("clamp_limit", act_kwargs.get("swiglu_limit", 0.0))
    ref = reference_moe_f64(layer, hidden, ids, weights, kind, limit)
    assert out.dtype == dtype and out.shape == hidden.shape
    assert ref.abs().max() > 0
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nvfp4_shapes_of_16_and_routing_entry(dtype):
    # H and I multiples of 16 but not of 32 (K = 16 mod 32), with the logits entry point.
    En, Hn, In = 4, 144, 48
    layer = random_nvfp4_layer(En, Hn, In, seed=43)
    prepared = nv_prepare(layer, activation_dtype=dtype)
    hidden, _, _ = random_tokens(9, Hn, En, 2, seed=44)
    hidden = hidden.to(dtype)
    logits = torch.randn(9, En, generator=torch.Generator().manual_seed(45))
    out = mt.fused_moe_from_logits(hidden, prepared, logits, 2, routing="softmax")
    w, i = mt.route(logits, 2, routing="softmax")
    assert torch.equal(out, mt.fused_moe(hidden, prepared, w, i))
    assert rel_err(out, reference_moe_f64(layer, hidden, i, w)) < TOL[dtype]


def test_global_scale_forms_are_one_thing():
    """[E, 2], [E] (both columns), [E, 1] and ModelOpt's per-expert scalars; the gate and up columns
    are kept apart (a different up column changes the result)."""
    layer = random_nvfp4_layer(E, H, I, seed=46)
    hidden, ids, weights = random_tokens(10, H, E, 2, seed=47)
    g = layer["w13_global_scale"][:, 0].contiguous()
    base = mt.fused_moe(hidden, nv_prepare({**layer, "w13_global_scale": torch.stack([g, g], 1)}), weights, ids)
    for form in (g, g[:, None], [torch.tensor(v) for v in g.tolist()], g.tolist()):
        p = nv_prepare({**layer, "w13_global_scale": form,
                        "w2_global_scale": [torch.tensor(v) for v in layer["w2_global_scale"].tolist()]})
        assert p.w13_global_scale.shape == (E, 2)
        assert torch.equal(mt.fused_moe(hidden, p, weights, ids), base)
    assert not torch.equal(mt.fused_moe(hidden, nv_prepare(layer), weights, ids), base)


def test_nvfp4_scale_dtypes():
    """UE4M3 as uint8 bytes, as torch.float8_e4m3fn, and as floats E4M3 holds exactly."""
    layer = random_nvfp4_layer(E, H, I, seed=48)
    hidden, ids, weights = random_tokens(6, H, E, 2, seed=49)
    base = mt.fused_moe(hidden, nv_prepare(layer), weights, ids)
    for convert in (lambda s: s.view(torch.float8_e4m3fn), lambda s: s.view(torch.float8_e4m3fn).float(),
                    lambda s: s.view(torch.float8_e4m3fn).to(torch.bfloat16)):
        p = nv_prepare({**layer, "w13_scale": convert(layer["w13_scale"]), "w2_scale": convert(layer["w2_scale"])})
        assert torch.equal(mt.fused_moe(hidden, p, weights, ids), base)


def test_every_e8m0_byte_is_accepted():
    layer, hidden_scale = wide_e8m0_layer(seed=50)
    assert sorted(set(layer["w13_scale"].flatten().tolist())) == list(range(255))
    prepared = mt.prepare(**layer)
    assert prepared.max_scale_byte == 254 and prepared.group == 32
    hidden = wide_hidden(16, hidden_scale, seed=51)
    _, ids, weights = random_tokens(16, 512, 4, 2, seed=52)
    out = mt.fused_moe(hidden, prepared, weights, ids)
    ref = reference_moe_f64(layer, hidden, ids, weights)
    assert torch.isfinite(ref.double()).all() and ref.abs().max() > 0
    assert rel_err(out, ref) < TOL[torch.bfloat16]
    # The same scales as float32 powers of two, 2^-127 (subnormal) .. 2^127, give the same bytes.
    floats = {k: torch.exp2(layer[k].double() - 127).float() for k in ("w13_scale", "w2_scale")}
    again = mt.prepare(**{**layer, **floats})
    assert torch.equal(again.w13_scale, layer["w13_scale"]) and torch.equal(mt.fused_moe(hidden, again, weights, ids), out)


def test_max_scale_byte_is_recorded_once():
    layer = random_layer(E, H, I, seed=53, scale_center=120)
    assert mt.prepare(**layer).max_scale_byte == int(max(layer["w13_scale"].max(), layer["w2_scale"].max()))
    high = layer["w2_scale"].clone()
    high[3, 4, 1] = 200
    assert mt.prepare(**{**layer, "w2_scale": high}).max_scale_byte == 200
    assert mt.prepare(**{**layer, "w2_scale": high}).w2_global_scale is None  # the CPU keeps canonical bytes


def _dequant_e8m0(packed, scales):
    return _dequant_f64(packed, scales, 32, lambda s: torch.exp2(s.double() - 127))


def test_e8m0_shifts_per_row_reproduce_the_canonical_values():
    """The rule of src/prepare/scale_shift.hpp as the torch package applies it on the GPU: per weight
    row d = max(0, the row's largest byte - 128), the row's bytes lowered by d, factors 2^d [E, 2I]
    and [E, H]; exact. Only a row spanning more than 128 bytes is left unshifted."""
    from mxmoe._prepare import e8m0_shifts
    layer = random_layer(4, 256, 128, seed=54, scale_center=120)
    s13, s2 = layer["w13_scale"].clone(), layer["w2_scale"].clone()
    assert e8m0_shifts(s13, s2)[2:] == (None, None, int(max(s13.max(), s2.max())))  # nothing above 128
    s13[1, 3, 2] = 240         # expert 1's gate row 3: d = 112, its other bytes 118..122 >= 112
    s13[2, 200, 0] = 129       # expert 2's up row 72: d = 1
    s2[3] += 130               # expert 3's w2: 248..252, each row its own d (120..124)
    s2[0, 5] = 254             # expert 0's w2 row 5: 254 throughout, d = 126 ...
    s2[0, 6, 0] = 0            # ... beside a 0 in row 6: one matrix spans 254 bytes, but no row does
    t13, t2, f13, f2, top = e8m0_shifts(s13, s2)
    assert top == 128 and int(t13.max()) == 128 and int(t2.max()) == 128
    assert t13.dtype == torch.uint8 and t13.shape == s13.shape and t2.shape == s2.shape
    want13 = torch.ones(4, 256)
    want13[1, 3], want13[2, 200] = 2.0 ** 112, 2.0
    want2 = torch.exp2((s2.amax(-1).double() - 128).clamp(min=0)).float()
    assert want2[0, 5] == 2.0 ** 126 and want2[0, 6] == 1.0 and want2[3].min() >= 2.0 ** 120
    assert f13.dtype == torch.float32 and f13.shape == (4, 256) and f2.shape == (4, 256)
    assert torch.equal(f13, want13) and torch.equal(f2, want2)
    assert torch.equal(t13[0], s13[0]) and torch.equal(t2[1:3], s2[1:3])
    assert torch.equal(t13[1, 4], s13[1, 4]) and int(t13[1, 3, 2]) == 128, "only row 3 of expert 1 is lowered"
    assert int(t2[0, 6, 0]) == 0 and int(t2[0, 5, 0]) == 128
    # Dequantised with each row's factor: the canonical values, bit for bit.
    assert torch.equal(_dequant_e8m0(layer["w13"], t13) * f13.double()[:, :, None], _dequant_e8m0(layer["w13"], s13))
    assert torch.equal(_dequant_e8m0(layer["w2"], t2) * f2.double()[:, :, None], _dequant_e8m0(layer["w2"], s2))
    # A row spanning more than 128 bytes (byte 111 beside 240 in row 3, d = 112): left to the
    # two-multiply format.
    s13[1, 3, 5] = 111
    t13, t2, f13, f2, top = e8m0_shifts(s13, s2)
    assert (f13, f2, top) == (None, None, 254) and t13 is s13 and t2 is s2


# ------------------------------------------------------------------------------------------- errors
def test_nvfp4_scale_errors_name_the_index():
    layer = random_nvfp4_layer(E, H, I, seed=54)
    bad = layer["w13_scale"].clone()
    bad[1, 2, 3] = 0x7F
    with pytest.raises(ValueError, match=r"w13_scale: the UE4M3 NaN byte 0x7F at index \[1, 2, 3\]"):
        nv_prepare({**layer, "w13_scale": bad})
    bad = layer["w2_scale"].clone()
    bad[0, 5, 2] = 0x80 | 0x30
    with pytest.raises(ValueError, match=r"w2_scale: byte 0xB0 at index \[0, 5, 2\] has its sign bit set.*UE4M3"):
        nv_prepare({**layer, "w2_scale": bad})
    with pytest.raises(ValueError, match=r"w2_scale: byte 0xB0 .*sign bit"):
        nv_prepare({**layer, "w2_scale": bad.view(torch.float8_e4m3fn)})
    with pytest.raises(ValueError, match=r"w13_scale: scale 0.3 at index \[0, 0, 0\] is not a UE4M3 value"):
        f = layer["w13_scale"].view(torch.float8_e4m3fn).float()
        f[0, 0, 0] = 0.3
        nv_prepare({**layer, "w13_scale": f})


def test_nvfp4_global_scale_errors():
    layer = random_nvfp4_layer(E, H, I, seed=55)
    with pytest.raises(LookupError, match="w13_global_scale: NVFP4 weights .* need their fp32 global scales"):
        nv_prepare({**layer, "w13_global_scale": None})
    with pytest.raises(LookupError, match="w2_global_scale: NVFP4 weights"):
        nv_prepare({**layer, "w2_global_scale": None})
    with pytest.raises(ValueError, match=r"w2_global_scale: shape \[8, 2\], expected \[8\]"):
        nv_prepare({**layer, "w2_global_scale": layer["w13_global_scale"]})
    neg = layer["w13_global_scale"].clone()
    neg[3, 1] = -1.0
    with pytest.raises(ValueError, match=r"w13_global_scale: -1 at index \[3, 1\]; a global scale must be finite"):
        nv_prepare({**layer, "w13_global_scale": neg})
    mx = random_layer(E, H, I, seed=56)
    with pytest.raises(ValueError, match="MXFP4 weights .* carry no global scales"):
        mt.prepare(**mx, w13_global_scale=layer["w13_global_scale"], w2_global_scale=layer["w2_global_scale"])


def test_fp16_with_mxfp4_says_why_bf16():
    mx = mt.prepare(**random_layer(E, H, I, seed=57))
    hidden, ids, weights = random_tokens(4, H, E, 2)
    with pytest.raises(TypeError, match=r"hidden_states: dtype float16; MXFP4 weights need bfloat16.*5-bit exponent"):
        mt.fused_moe(hidden.half(), mx, weights, ids)
    with pytest.raises(TypeError, match="activation_dtype: float16 with MXFP4 weights; they need bfloat16"):
        mt.prepare(**random_layer(E, H, I, seed=57), activation_dtype=torch.float16)
    # The C ABI says the same to a caller that skips the Python checks.
    out = torch.empty(4, H, dtype=torch.float16)
    with pytest.raises(TypeError, match="MXFP4 weights .* need bf16 activations"):
        torch.ops.mxmoe.fused_moe(hidden.half(), mx.w13, mx.w13_scale, mx.w2, mx.w2_scale, None, None, None, None,
                                  ids, weights, I, 32, mx.max_scale_byte, 0, 0.0, 1.702, out)


def test_activation_dtype_fixed_at_prepare_is_enforced():
    layer = random_nvfp4_layer(E, H, I, seed=58)
    p16 = nv_prepare(layer, activation_dtype=torch.float16)
    hidden, ids, weights = random_tokens(4, H, E, 2)
    with pytest.raises(TypeError, match="hidden_states: dtype bfloat16; the weights were prepared for float16"):
        mt.fused_moe(hidden, p16, weights, ids)
    with pytest.raises(TypeError, match="out: dtype bfloat16, expected float16"):
        mt.fused_moe(hidden.half(), p16, weights, ids, out=torch.empty(4, H, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="hidden_states: dtype float32"):
        mt.fused_moe(hidden.float(), p16, weights, ids)


def test_c_abi_refuses_nvfp4_without_global_scales():
    layer = random_nvfp4_layer(E, H, I, seed=59)
    p = nv_prepare(layer)
    hidden, ids, weights = random_tokens(4, H, E, 2)
    out = torch.empty_like(hidden)
    with pytest.raises(LookupError, match="w13_global_scale"):
        torch.ops.mxmoe.fused_moe(hidden, p.w13, p.w13_scale, p.w2, p.w2_scale, None, None, None, p.w2_global_scale,
                                  ids, weights, I, 16, 0, 0, 0.0, 1.702, out)


def test_e8m0_254_times_a_large_code_is_refused():
    layer = random_layer(E, H, I, seed=60)
    s = layer["w13_scale"].clone()
    w = layer["w13"].clone()
    s[2, 3, 1] = 254
    w[2, 3, 16] = 0x07  # code 7 (6.0) in the block of group 1 (bytes 16..31)
    with pytest.raises(ValueError, match=r"w13_scale: E8M0 byte 254 \(2\^127\) at \[expert, row, group\] \[2, 3, 1\] "
                                         r"times the E2M1 magnitude 6 .* infinite"):
        mt.prepare(**{**layer, "w13": w, "w13_scale": s})


def test_group_from_the_scale_shape():
    layer = random_nvfp4_layer(E, H, I, seed=61)
    with pytest.raises(ValueError, match=r"w13_scale: shape \[8, 256, 5\], expected \[8, 256, 8\] \(MXFP4.*"
                                         r"or \[8, 256, 16\] \(NVFP4"):
        nv_prepare({**layer, "w13_scale": layer["w13_scale"][:, :, :5]})
    with pytest.raises(ValueError, match=r"w2_scale: shape \[8, 256, 4\], expected \[8, 256, 8\]"):
        nv_prepare({**layer, "w2_scale": layer["w2_scale"][:, :, :4]})  # group 16 from w13_scale
    with pytest.raises(ValueError, match="multiples of the NVFP4 group"):
        mt.Nvfp4MoE(8, 100, 128)


# --------------------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_compile_fullgraph_nvfp4_cpu(dtype):
    layer = random_nvfp4_layer(4, 128, 64, seed=62)
    prepared = nv_prepare(layer)
    hidden, _, _ = random_tokens(8, 128, 4, 2, seed=63)
    hidden = hidden.to(dtype)
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(64))

    def moe(x, logits):
        w, i = mt.route(logits, 2, routing="softmax")
        return mt.fused_moe(x, prepared, w, i) * 2 + mt.fused_moe_from_logits(x, prepared, logits, 2)

    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(hidden, logits), moe(hidden, logits))
    torch._dynamo.reset()


def test_fake_prepare_gives_the_tiled_shapes_for_group_16():
    """The fake implementation (meta tensors) of prepare sizes NVFP4's tiled tensors without a GPU."""
    En, Hn, In = 4, 144, 48
    t = dict(w13=torch.empty(En, 2 * In, Hn // 2, dtype=torch.uint8, device="meta"),
             s13=torch.empty(En, 2 * In, Hn // 16, dtype=torch.uint8, device="meta"),
             w2=torch.empty(En, Hn, In // 2, dtype=torch.uint8, device="meta"),
             s2=torch.empty(En, Hn, In // 16, dtype=torch.uint8, device="meta"))
    shapes = [tuple(x.shape) for x in torch.ops.mxmoe.prepare(t["w13"], t["s13"], t["w2"], t["s2"], 16)]
    from mxmoe import ops
    (wb13, sb13), (wb2, sb2) = ops.prepared_bytes(2 * In, Hn, 16), ops.prepared_bytes(Hn, In, 16)
    assert shapes == [(En, wb13), (En, sb13), (En, wb2), (En, sb2)]
    assert sb13 == (2 * In // 16) * 3 * 64  # 3 chunks of 64 K (K = 144 padded to 192), 64 B each
