"""Every error of the torch API is a Python exception naming the tensor and what was expected."""
import ctypes

import pytest
import torch

import mxmoe
from mxmoe import _capi
from mxmoe import torch as mt
from moe_data import random_layer, random_tokens

E, H, I = 8, 256, 128


@pytest.fixture(scope="module")
def prepared():
    return mt.prepare(**random_layer(E, H, I, seed=31))


def test_fp16_activations_say_bf16_is_required(prepared):
    hidden, ids, weights = random_tokens(4, H, E, 2)
    with pytest.raises(TypeError, match="hidden_states: dtype float16.*bfloat16"):
        mt.fused_moe(hidden.half(), prepared, weights, ids)


@pytest.mark.parametrize("mutate,pattern", [
    (lambda h, i, w: (h[:, :128], i, w), "hidden size 128"),
    (lambda h, i, w: (h, i[:3], w[:3]), "topk_ids: 3 rows"),
    (lambda h, i, w: (h, i, w[:, :1]), r"topk_weights: shape \[4, 1\], expected \[4, 2\]"),
    (lambda h, i, w: (h, i.float(), w), "topk_ids: dtype float32, expected int32 or int64"),
    (lambda h, i, w: (h[0], i, w), "hidden_states: expected 2 dimensions"),
])
def test_wrong_shapes_and_dtypes(prepared, mutate, pattern):
    hidden, ids, weights = mutate(*random_tokens(4, H, E, 2))
    with pytest.raises(mt.Error, match=pattern):
        mt.fused_moe(hidden, prepared, weights, ids)


def test_ids_out_of_range_without_expert_map(prepared):
    hidden, ids, weights = random_tokens(4, H, E, 2)
    ids[2, 1] = E
    with pytest.raises(ValueError, match=r"id 8 at \[token, slot\] \[2, 1\] is outside -1..7.*expert_map"):
        mt.fused_moe(hidden, prepared, weights, ids)


def test_tensors_on_different_devices(prepared):
    hidden, ids, weights = random_tokens(4, H, E, 2)
    with pytest.raises(mt.Error, match="topk_ids is on meta.*one device"):
        mt.fused_moe(hidden, prepared, weights, ids.to("meta"))


def test_out_of_wrong_dtype(prepared):
    hidden, ids, weights = random_tokens(4, H, E, 2)
    with pytest.raises(mt.Error, match="out: dtype float32, expected bfloat16"):
        mt.fused_moe(hidden, prepared, weights, ids, out=torch.empty(4, H))


def test_unknown_activation_and_routing(prepared):
    hidden, ids, weights = random_tokens(4, H, E, 2)
    with pytest.raises(ValueError, match="activation 'gelu' is not supported"):
        mt.fused_moe(hidden, prepared, weights, ids, activation="gelu")
    with pytest.raises(ValueError, match="routing 'sparsemax'"):
        mt.route(torch.randn(4, E), 2, routing="sparsemax")


def test_prepare_shape_dtype_and_group_errors():
    layer = random_layer(E, H, I, seed=32)
    with pytest.raises(TypeError, match="w13: dtype float32"):
        mt.prepare(**{**layer, "w13": layer["w13"].float()})
    with pytest.raises(ValueError, match=r"w2_scale: shape \[8, 256, 8\], expected \[8, 256, 4\]"):
        # group 16 (NVFP4's) gives twice the scales along K
        mt.prepare(**{**layer, "w2_scale": torch.zeros(E, H, I // 16, dtype=torch.uint8)})
    with pytest.raises(ValueError, match=r"w13_scale: the E8M0 NaN byte 0xFF at index \[0, 0, 0\]"):
        bad = layer["w13_scale"].clone()
        bad[0, 0, 0] = 255
        mt.prepare(**{**layer, "w13_scale": bad})
    with pytest.raises(ValueError, match="multiples of the MXFP4 group"):
        mt.Mxfp4MoE(8, 100, 128)


def test_device_check_names_why():
    status = _capi.lib.mxmoe_check_device(0)
    if status == 0:
        pytest.skip("a Hopper GPU is present")
    with pytest.raises(mt.Error, match="CUDA|Hopper|device"):
        _capi.check(status)
    assert mxmoe.cuda_compiled() in (True, False)


def test_non_contiguous_out_is_refused_by_both_entry_points(prepared):
    hidden, ids, weights = random_tokens(4, H, E, 2)
    out = torch.empty(H, 4, dtype=torch.bfloat16).t()
    with pytest.raises(mt.Error, match="out: must be contiguous"):
        mt.fused_moe(hidden, prepared, weights, ids, out=out)
    with pytest.raises(mt.Error, match="out: must be contiguous"):
        mt.fused_moe_from_logits(hidden, prepared, torch.randn(4, E), 2, out=out)


@pytest.mark.skipif(not mxmoe.cuda_compiled(), reason="the CUDA entry point's checks are compiled with the CUDA backend")
def test_c_abi_refuses_half_a_set_of_shift_factors_or_unshifted_bytes():
    # MXFP4 weights prepared with an E8M0 shift carry both per-row factor tensors and bytes <= 128;
    # the checks run before any device work, so fake (aligned, never read) pointers reach them.
    fake = 1 << 20

    def forward(**fields):
        w = _capi.Weights(fake, fake, fake, fake, None, None, None, None, E, H, I, 32, 0, 128)
        for k, v in fields.items():
            setattr(w, k, v)
        act = _capi.Activation(0, 0.0, 1.702)
        return _capi.lib.mxmoe_forward_cuda(ctypes.byref(w), ctypes.byref(act), fake, fake, fake, fake, 1, 2, fake, 1 << 20,
                                            None, 0)

    def message(status):
        with pytest.raises(Exception) as e:
            _capi.check(status)
        return str(e.value)

    assert "w2_global_scale is null while the other factor tensor is set" in message(forward(w13_global_scale=fake))
    assert "hold prepared E8M0 bytes 0..128, but max_scale_byte is 200" in message(
        forward(w13_global_scale=fake, w2_global_scale=fake, max_scale_byte=200))
