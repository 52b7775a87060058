"""The CUDA ops on a Hopper GPU against the CPU op (the oracle): MXFP4 (every E8M0 byte too) and NVFP4
with bf16 and fp16 activations, shapes beyond the presets, K not a multiple of 64 (NVFP4: nor of 32),
biases, every activation, skewed routing; CUDA-graph capture and replay with new inputs; bitwise
repeat; in-place preparation's memory; W4A8 (act="fp8") against the CPU op's FP8 mode (TOL_FP8 below
says why its tolerance is wider), its graph capture and its module flow. Skipped, saying why, without a
Hopper GPU.

Tolerance: both accumulate exactly dequantised weights and 16-bit inputs in fp32, in different
orders, and round the intermediate and output to the activation dtype: norm-wise relative error
below 1e-2 in bf16 and 2e-3 in fp16 (the C++ GPU tests measure 1e-5..1e-3)."""
import pytest
import torch

from mxmoe import _capi
from mxmoe import torch as mt
from moe_data import random_layer, random_nvfp4_layer, random_tokens, rel_err, wide_e8m0_layer, wide_hidden

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the CUDA ops are tested on a Hopper GPU", allow_module_level=True)
if _capi.lib.mxmoe_check_device(torch.cuda.current_device()) != 0:
    pytest.skip("not a Hopper GPU / no CUDA backend: " + _capi.lib.mxmoe_last_error().decode(),
                allow_module_level=True)

TOL = 1e-2
TOL16 = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


def on(layer, device):
    return {k: (None if v is None else v.to(device)) for k, v in layer.items()}


SHAPES = [  # E, H, I, top_k, T, bias, activation kwargs
    (8, 256, 128, 2, 1, False, dict(activation="silu")),
    (16, 512, 256, 4, 37, True, dict(activation="silu", clamp_limit=0.5)),
    (32, 320, 96, 6, 200, True, dict(activation="swigluoai", swiglu_limit=0.5)),  # K % 64 != 0
    (64, 256, 256, 8, 1000, False, dict(activation="silu")),
]


@pytest.mark.parametrize("E,H,I,k,T,bias,act", SHAPES)
@pytest.mark.parametrize("skew", [False, True])
def test_cuda_matches_cpu_oracle(E, H, I, k, T, bias, act, skew):
    layer = random_layer(E, H, I, bias=bias, seed=E + T)
    hidden, ids, weights = random_tokens(T, H, E, k, seed=T, skew=skew)
    ids[0, 0] = -1  # a slot on no expert
    cpu = mt.fused_moe(hidden, mt.prepare(**layer), weights, ids, check_ids=False, **act)
    gpu_prepared = mt.prepare(**on(layer, "cuda"))
    out = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device="cuda")  # poisoned
    mt.fused_moe(hidden.cuda(), gpu_prepared, weights.cuda(), ids.cuda(), out=out, **act)
    assert rel_err(out.cpu(), cpu) < TOL


def test_batch_invariant_gives_a_token_the_same_bits_in_any_batch():
    # Sub-batches of 1, 2, 7, 64 tokens (mma.sync, the K split forbidden) against the same tokens in a
    # batch of 2048 (32 experts, top-4: 256 pairs per expert), bit for bit, at the batch's front and end.
    E, H, I, k, big = 32, 512, 256, 4, 2048
    prepared = mt.prepare(**on(random_layer(E, H, I, bias=True, seed=24), "cuda"))
    hidden, ids, weights = (t.cuda() for t in random_tokens(big, H, E, k, seed=25))
    full = mt.fused_moe(hidden, prepared, weights, ids, batch_invariant=True)
    for T in (1, 2, 7, 64):
        for first in (0, big - T):
            part = mt.fused_moe(hidden[first:first + T], prepared, weights[first:first + T], ids[first:first + T],
                                batch_invariant=True)
            assert torch.equal(part, full[first:first + T]), (T, first)


def test_route_cuda_matches_cpu():
    logits = torch.randn(300, 64, generator=torch.Generator().manual_seed(5))
    bias = torch.randn(64, generator=torch.Generator().manual_seed(6)) * 0.1
    for routing in ("softmax", "gpt_oss", "deepseek_v4"):
        cb = bias if routing == "deepseek_v4" else None
        w_cpu, i_cpu = mt.route(logits, 6, routing=routing, correction_bias=cb)
        w_gpu, i_gpu = mt.route(logits.cuda(), 6, routing=routing, correction_bias=None if cb is None else cb.cuda())
        assert torch.equal(i_gpu.cpu(), i_cpu), routing
        assert torch.allclose(w_gpu.cpu(), w_cpu, rtol=1e-5, atol=1e-6), routing


@pytest.mark.parametrize("act", ["bf16", "fp8"])
def test_bitwise_repeat_and_graph_replay_with_new_inputs(act):
    E, H, I, k, T = 32, 512, 256, 4, 64
    prepared = mt.prepare(**on(random_layer(E, H, I, seed=7), "cuda"), act=act)
    hidden, ids, weights = (t.cuda() for t in random_tokens(T, H, E, k, seed=8))
    first = mt.fused_moe(hidden, prepared, weights, ids)
    for _ in range(3):
        assert torch.equal(mt.fused_moe(hidden, prepared, weights, ids), first)

    static_h, static_i, static_w = hidden.clone(), ids.clone(), weights.clone()
    static_out = torch.empty_like(hidden)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on the capture stream
        mt.fused_moe(static_h, prepared, static_w, static_i, out=static_out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        mt.fused_moe(static_h, prepared, static_w, static_i, out=static_out)
    for seed in (9, 10, 11):
        h2, i2, w2 = (t.cuda() for t in random_tokens(T, H, E, k, seed=seed, skew=seed == 10))
        static_h.copy_(h2), static_i.copy_(i2), static_w.copy_(w2)
        static_out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, mt.fused_moe(h2, prepared, w2, i2)), seed


def test_module_inplace_matches_functional_and_peak_memory(monkeypatch):
    from mxmoe import _prepare
    E, H, I = 64, 512, 256
    layer = random_layer(E, H, I, bias=True, seed=12)
    reference = mt.prepare(**on(layer, "cuda"))
    group_bytes = 4 * (3 * H * I // 2 + 3 * H * I // 32)  # four experts of w13 + w2
    monkeypatch.setattr(_prepare, "_STAGE_BYTES", group_bytes // 2)
    module = mt.Mxfp4MoE(E, H, I, scale_dtype=torch.uint8, has_bias=True, device="cuda")
    with torch.no_grad():
        for name, role in (("w13_weight", "w13"), ("w2_weight", "w2"), ("w13_weight_scale", "w13_scale"),
                           ("w2_weight_scale", "w2_scale"), ("w13_bias", "w13_bias"), ("w2_bias", "w2_bias")):
            getattr(module, name).copy_(layer[role])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    module.process_weights_after_loading()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    layer_bytes = reference.nbytes()
    assert extra < layer_bytes / 4, (extra, layer_bytes)  # staging groups, not a second layer
    hidden, ids, weights = (t.cuda() for t in random_tokens(50, H, E, 4, seed=13))
    assert torch.equal(module(hidden, weights, ids), mt.fused_moe(hidden, reference, weights, ids))


def test_cuda_errors_name_the_fault():
    layer = random_layer(8, 256, 128, seed=14)
    prepared = mt.prepare(**on(layer, "cuda"))
    hidden, ids, weights = random_tokens(4, 256, 8, 2)
    with pytest.raises(mt.Error, match="hidden_states is on cpu"):
        mt.fused_moe(hidden, prepared, weights.cuda(), ids.cuda())
    nv = random_nvfp4_layer(8, 256, 128, seed=14)
    signed = nv["w2_scale"].clone()
    signed[1, 2, 3] = 0xB0
    with pytest.raises(mt.Error, match=r"w2_scale: byte 0xB0 at index \[1, 2, 3\] has its sign bit set"):
        mt.prepare(**on({**nv, "w2_scale": signed}, "cuda"))
    with pytest.raises(TypeError, match="MXFP4 weights need bfloat16"):
        mt.fused_moe(hidden.cuda().half(), prepared, weights.cuda(), ids.cuda())
    with pytest.raises(ValueError, match="outside -1..7"):
        bad = ids.clone()
        bad[0, 0] = 9
        mt.fused_moe(hidden.cuda(), prepared, weights.cuda(), bad.cuda(), check_ids=True)


NV_SHAPES = [  # E, H, I, top_k, T, bias, activation kwargs
    (8, 256, 128, 2, 1, False, dict(activation="silu")),
    (16, 512, 256, 4, 37, True, dict(activation="silu", clamp_limit=0.5)),
    (32, 144, 48, 6, 200, True, dict(activation="swigluoai", swiglu_limit=0.5)),  # K % 32 == 16
    (64, 256, 256, 8, 1000, False, dict(activation="silu")),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("E,H,I,k,T,bias,act", NV_SHAPES)
def test_nvfp4_cuda_matches_cpu_oracle(dtype, E, H, I, k, T, bias, act):
    layer = random_nvfp4_layer(E, H, I, bias=bias, seed=E + T)
    hidden, ids, weights = random_tokens(T, H, E, k, seed=T, skew=T == 37)
    hidden = hidden.to(dtype)
    ids[0, 0] = -1
    cpu = mt.fused_moe(hidden, mt.prepare(**layer), weights, ids, check_ids=False, **act)
    gpu_prepared = mt.prepare(**on(layer, "cuda"), activation_dtype=dtype)
    assert gpu_prepared.layout == "tiled" and gpu_prepared.w13_global_scale.is_cuda
    out = torch.full((T, H), float("nan"), dtype=dtype, device="cuda")  # poisoned
    mt.fused_moe(hidden.cuda(), gpu_prepared, weights.cuda(), ids.cuda(), out=out, **act)
    assert rel_err(out.cpu(), cpu) < TOL16[dtype]


def test_every_e8m0_byte_cuda_matches_cpu_oracle():
    layer, hidden_scale = wide_e8m0_layer(seed=18)
    hidden = wide_hidden(64, hidden_scale, seed=19)
    _, ids, weights = random_tokens(64, 512, 4, 2, seed=20)
    cpu = mt.fused_moe(hidden, mt.prepare(**layer), weights, ids)
    prepared = mt.prepare(**on(layer, "cuda"))
    # Every w13 row spans its groups' centres 8..246 (more than 128 bytes): no shift, the kernels'
    # two-multiply format.
    assert prepared.max_scale_byte == 254 and prepared.w13_global_scale is None and prepared.w2_global_scale is None
    gpu = mt.fused_moe(hidden.cuda(), prepared, weights.cuda(), ids.cuda())
    assert rel_err(gpu.cpu(), cpu) < TOL


@pytest.mark.parametrize("inplace", [False, True])
def test_e8m0_bytes_above_128_run_shifted_and_match_cpu_oracle(inplace):
    E, H, I, k, T = 8, 256, 128, 2, 40
    layer = random_layer(E, H, I, bias=True, seed=23, scale_center=120)
    # Outputs of every expert stay O(1): what one matrix's shift gains, another gives back.
    layer["w2_scale"][1] += 100      # expert 1's w2: 218..222 (2^91..2^95): each row d = its largest - 128
    layer["w13_scale"][1] -= 50      # under tiny w13 scales (no shift)
    layer["w13_scale"][2, :I] += 10  # expert 2's gate rows: 128..132: d = 0..4 by row; its up rows: none
    layer["w2_scale"][2] -= 10
    layer["w2_scale"][3, 7] = 129    # one w2 row of expert 3 at 129 among rows near 120: d = 1 there, and
                                     # its neighbours keep their bytes (a per-matrix shift would lower them)
    hidden, ids, weights = random_tokens(T, H, E, k, seed=24)
    cpu = mt.fused_moe(hidden, mt.prepare(**layer), weights, ids)
    prepared = mt.prepare(**on(layer, "cuda"), inplace=inplace)
    assert prepared.max_scale_byte == 128
    assert prepared.w13_global_scale.shape == (E, 2 * I) and prepared.w2_global_scale.shape == (E, H)
    for got, scales in ((prepared.w13_global_scale, layer["w13_scale"]), (prepared.w2_global_scale, layer["w2_scale"])):
        want = torch.exp2((scales.amax(-1).double() - 128).clamp(min=0)).float()
        assert torch.equal(got.cpu(), want)
    assert float(prepared.w2_global_scale[3, 7]) == 2.0 and float(prepared.w2_global_scale[3, 6]) == 1.0
    gpu = mt.fused_moe(hidden.cuda(), prepared, weights.cuda(), ids.cuda())
    assert rel_err(gpu.cpu(), cpu) < TOL


def test_nvfp4_module_inplace_graph_replay_fp16():
    E, H, I, k, T = 16, 512, 256, 4, 48
    layer = random_nvfp4_layer(E, H, I, bias=True, seed=21)
    reference = mt.prepare(**on(layer, "cuda"), activation_dtype=torch.float16)  # the fp16 tile layout
    module = mt.Nvfp4MoE(E, H, I, params_dtype=torch.float16, has_bias=True, device="cuda")
    with torch.no_grad():
        for name, role in (("w13_weight", "w13"), ("w2_weight", "w2"), ("w13_bias", "w13_bias"),
                           ("w2_bias", "w2_bias"), ("w13_weight_scale_2", "w13_global_scale"),
                           ("w2_weight_scale_2", "w2_global_scale")):
            getattr(module, name).copy_(layer[role])
        module.w13_weight_scale.view(torch.uint8).copy_(layer["w13_scale"])
        module.w2_weight_scale.view(torch.uint8).copy_(layer["w2_scale"])
    module.process_weights_after_loading()
    hidden, ids, weights = (t.cuda() for t in random_tokens(T, H, E, k, seed=22))
    hidden = hidden.half()
    first = module(hidden, weights, ids)
    assert torch.equal(first, mt.fused_moe(hidden, reference, weights, ids))
    static_out = torch.empty_like(hidden)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        module(hidden, weights, ids, out=static_out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(hidden, weights, ids, out=static_out)
    static_out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, first)


def test_fused_moe_from_logits_cuda_matches_cpu():
    E, H, I, T = 16, 256, 128, 33
    layer = random_layer(E, H, I, bias=True, seed=15)
    hidden, _, _ = random_tokens(T, H, E, 4, seed=16)
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(17))
    cpu = mt.fused_moe_from_logits(hidden, mt.prepare(**layer), logits, 4, routing="gpt_oss", activation="swigluoai")
    gpu = mt.fused_moe_from_logits(hidden.cuda(), mt.prepare(**on(layer, "cuda")), logits.cuda(), 4,
                                   routing="gpt_oss", activation="swigluoai")
    assert rel_err(gpu.cpu(), cpu) < TOL


def test_nvfp4_gpu_prepare_fixes_the_activation_dtype():
    # The GPU tile layout places the bits for one operand type: prepared without activation_dtype, an
    # NVFP4 layer runs bfloat16 there, and fp16 hidden states get an error that says what to do.
    E, H, I, k = 8, 256, 128, 2
    layer = random_nvfp4_layer(E, H, I, seed=23)
    prepared = mt.prepare(**on(layer, "cuda"))
    assert prepared.activation_dtype == torch.bfloat16
    hidden, ids, weights = (t.cuda() for t in random_tokens(4, H, E, k, seed=24))
    assert mt.fused_moe(hidden, prepared, weights, ids).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="prepared for bfloat16 activations"):
        mt.fused_moe(hidden.half(), prepared, weights, ids)


# ------------------------------------------------------------------------------------- W4A8 (fp8)
# The CUDA op and the CPU op in FP8 mode quantise the same values the same way (hidden rows: identically;
# the intermediate: up to the bf16 rounding flips above), but Hopper's FP8 tensor cores keep only about
# 14 bits per accumulation (DeepSeek-V3's report, section 3.3.2), so the dot products drift by up to
# ~1e-2 relative over long K (the C++ GPU tests measured 0.6e-3..1.6e-2, bench/results/*-H200-w4a8):
# norm-wise relative error below 3e-2. A wrong layout, table or row factor gives errors of order 1.
TOL_FP8 = 3e-2


def _powers_of_two(t: torch.Tensor) -> bool:
    mantissa, _ = torch.frexp(t.cpu())
    return bool(torch.all(mantissa == 0.5))


@pytest.mark.parametrize("E,H,I,k,T,bias,act", SHAPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_w4a8_cuda_matches_cpu_fp8_oracle(E, H, I, k, T, bias, act, inplace):
    layer = random_layer(E, H, I, bias=bias, seed=E + T + 1)
    hidden, ids, weights = random_tokens(T, H, E, k, seed=T + 1, skew=T == 37)
    ids[0, 0] = -1  # a slot on no expert
    cpu = mt.fused_moe(hidden, mt.prepare(**layer, act="fp8"), weights, ids, check_ids=False, **act)
    cpu_bf16 = mt.fused_moe(hidden, mt.prepare(**layer), weights, ids, check_ids=False, **act)
    prepared = mt.prepare(**on(layer, "cuda"), act="fp8", inplace=inplace)
    assert prepared.layout == "tiled" and prepared.format == "mxfp4-e4m3" and prepared.fp8_activations
    f13, f2 = prepared.w13_global_scale, prepared.w2_global_scale  # the row factors 2^base
    assert f13.is_cuda and f13.dtype == torch.float32 and f13.shape == (E, 2 * I) and f2.shape == (E, H)
    assert _powers_of_two(f13) and _powers_of_two(f2)
    out = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device="cuda")  # poisoned
    mt.fused_moe(hidden.cuda(), prepared, weights.cuda(), ids.cuda(), out=out, **act)
    err = rel_err(out.cpu(), cpu)
    assert err < TOL_FP8
    # W4A8, not W4A16: nearer the FP8 oracle than the bf16 one (which is ~4e-2 away from it).
    assert err < rel_err(out.cpu(), cpu_bf16)


def test_w4a8_from_logits_cuda_matches_cpu():
    E, H, I, T = 16, 256, 128, 33
    layer = random_layer(E, H, I, bias=True, seed=25)
    hidden, _, _ = random_tokens(T, H, E, 4, seed=26)
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(27))
    cpu = mt.fused_moe_from_logits(hidden, mt.prepare(**layer, act="fp8"), logits, 4, routing="gpt_oss",
                                   activation="swigluoai")
    prepared = mt.prepare(**on(layer, "cuda"), act="fp8")
    gpu = mt.fused_moe_from_logits(hidden.cuda(), prepared, logits.cuda(), 4, routing="gpt_oss",
                                   activation="swigluoai")
    assert rel_err(gpu.cpu(), cpu) < TOL_FP8


def test_w4a8_batch_invariant_gives_a_token_the_same_bits_in_any_batch():
    # As the bf16 test above, in W4A8: the quantisation is per token and per routed pair, so with
    # batch_invariant (mma.sync FP8, no K split) sub-batches of 1, 2, 7, 64 tokens match the same tokens
    # in a batch of 2048 bit for bit, and every one stays within TOL_FP8 of the CPU op's FP8 mode.
    E, H, I, k, big = 32, 512, 256, 4, 2048
    layer = random_layer(E, H, I, bias=True, seed=35)
    prepared = mt.prepare(**on(layer, "cuda"), act="fp8")
    hidden, ids, weights = random_tokens(big, H, E, k, seed=36)
    full = mt.fused_moe(hidden.cuda(), prepared, weights.cuda(), ids.cuda(), batch_invariant=True)
    for T in (1, 2, 7, 64):
        for first in (0, big - T):
            sl = slice(first, first + T)
            part = mt.fused_moe(hidden[sl].cuda(), prepared, weights[sl].cuda(), ids[sl].cuda(), batch_invariant=True)
            assert torch.equal(part, full[sl]), (T, first)
    cpu = mt.fused_moe(hidden[:64], mt.prepare(**layer, act="fp8"), weights[:64], ids[:64])
    assert rel_err(full[:64].cpu(), cpu) < TOL_FP8


def test_w4a8_module_inplace_matches_functional_and_cpu():
    E, H, I, k, T = 16, 512, 256, 4, 48
    layer = random_layer(E, H, I, bias=True, seed=33)
    reference = mt.prepare(**on(layer, "cuda"), act="fp8")
    module = mt.Mxfp4MoE(E, H, I, scale_dtype=torch.uint8, has_bias=True, device="cuda", activation_precision="fp8")
    with torch.no_grad():
        for name, role in (("w13_weight", "w13"), ("w2_weight", "w2"), ("w13_weight_scale", "w13_scale"),
                           ("w2_weight_scale", "w2_scale"), ("w13_bias", "w13_bias"), ("w2_bias", "w2_bias")):
            getattr(module, name).copy_(layer[role])
    module.process_weights_after_loading()
    assert module.prepared.format == "mxfp4-e4m3" and module.prepared.layout == "tiled"
    assert torch.equal(module.prepared.w13_global_scale, reference.w13_global_scale)
    assert torch.equal(module.prepared.w2_global_scale, reference.w2_global_scale)
    hidden, ids, weights = (t.cuda() for t in random_tokens(T, H, E, k, seed=34))
    out = module(hidden, weights, ids)
    assert torch.equal(out, mt.fused_moe(hidden, reference, weights, ids))
    cpu = mt.fused_moe(hidden.cpu(), mt.prepare(**layer, act="fp8"), weights.cpu(), ids.cpu())
    assert rel_err(out.cpu(), cpu) < TOL_FP8
