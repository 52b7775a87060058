"""Mxfp4MoE, the engine-level flow: create_weights, a loader filling any alias and scale dtype,
process_weights_after_loading, forward; and from_checkpoint through the C++ loader."""
import pytest
import torch

from mxmoe import torch as mt
from moe_data import random_layer, random_tokens, reference_moe, rel_err

E, H, I = 8, 256, 128


def scales_as(bytes_: torch.Tensor, dtype):
    if dtype == torch.uint8:
        return bytes_.clone()
    if str(dtype) == "torch.float8_e8m0fnu":
        return bytes_.clone().view(dtype)
    return torch.exp2(bytes_.float() - 127).to(dtype)


SCALE_DTYPES = [torch.uint8, torch.float32, torch.bfloat16, torch.float16] + (
    [torch.float8_e8m0fnu] if hasattr(torch, "float8_e8m0fnu") else [])


def load(module, layer, scale_name, bias_name, scale_dtype):
    """What an engine's weight loader does: fill (or register) tensors under the checkpoint's names."""
    with torch.no_grad():
        module.w13_weight.copy_(layer["w13"])
        module.w2_weight.copy_(layer["w2"])
    if scale_name != "weight_scale":  # a loader that registered the *_scale_inv names instead
        del module.w13_weight_scale, module.w2_weight_scale
    for m in ("w13", "w2"):
        setattr(module, f"{m}_{scale_name}", torch.nn.Parameter(scales_as(layer[f"{m}_scale"], scale_dtype),
                                                                requires_grad=False))
        if layer["w13_bias"] is not None:
            if hasattr(module, f"{m}_bias"):
                delattr(module, f"{m}_bias")
            setattr(module, f"{m}_{bias_name}", torch.nn.Parameter(layer[f"{m}_bias"].clone(), requires_grad=False))


@pytest.mark.parametrize("scale_dtype", SCALE_DTYPES, ids=str)
@pytest.mark.parametrize("scale_name", ["weight_scale", "weight_scale_inv"])
@pytest.mark.parametrize("bias_name", ["bias", "weight_bias", None])
def test_every_alias_and_scale_dtype(scale_dtype, scale_name, bias_name):
    layer = random_layer(E, H, I, bias=bias_name is not None, seed=21)
    module = mt.Mxfp4MoE(E, H, I, scale_dtype=scale_dtype, has_bias=bias_name is not None)
    load(module, layer, scale_name, bias_name or "bias", scale_dtype)
    module.process_weights_after_loading()
    # The loader's tensors are gone; the prepared ones are buffers that torch owns.
    names = dict(module.named_parameters())
    assert not any(n.startswith(("w13_", "w2_")) for n in names), names.keys()
    hidden, ids, weights = random_tokens(12, H, E, 2, seed=22)
    out = module(hidden, weights, ids)
    assert rel_err(out, reference_moe(layer, hidden, ids, weights)) < 1e-2
    assert torch.equal(out, mt.fused_moe(hidden, mt.prepare(**layer), weights, ids))


def test_forward_before_processing_is_an_error():
    module = mt.Mxfp4MoE(E, H, I)
    hidden, ids, weights = random_tokens(2, H, E, 2)
    with pytest.raises(mt.Error, match="process_weights_after_loading"):
        module(hidden, weights, ids)


def test_two_aliases_of_one_tensor_are_refused_and_nothing_is_lost():
    layer = random_layer(E, H, I, seed=23)
    module = mt.Mxfp4MoE(E, H, I, scale_dtype=torch.uint8)
    load(module, layer, "weight_scale", "bias", torch.uint8)
    module.w13_weight_scale_inv = torch.nn.Parameter(layer["w13_scale"].clone(), requires_grad=False)
    with pytest.raises(mt.Error, match="w13_weight_scale and w13_weight_scale_inv"):
        module.process_weights_after_loading()
    assert torch.equal(module.w13_weight, layer["w13"])  # still there, unchanged


def test_missing_tensor_names_every_alias():
    module = mt.Mxfp4MoE(E, H, I)
    del module.w2_weight_scale
    with pytest.raises(mt.Error, match="w2_weight_scale, w2_weight_scale_inv"):
        module.process_weights_after_loading()


def test_bad_float_scale_names_tensor_and_index():
    layer = random_layer(E, H, I, seed=24)
    module = mt.Mxfp4MoE(E, H, I)
    load(module, layer, "weight_scale", "bias", torch.float32)
    with torch.no_grad():
        module.w2_weight_scale[3, 5, 1] = 0.3
    with pytest.raises(mt.Error, match=r"w2_scale.*\[3, 5, 1\]"):
        module.process_weights_after_loading()
    assert hasattr(module, "w2_weight")  # restored for the caller


def test_expert_map_module():
    layer = random_layer(4, H, I, seed=25)
    expert_map = torch.tensor([-1, -1, 0, 1, 2, 3, -1, -1], dtype=torch.int32)
    module = mt.Mxfp4MoE(4, H, I, scale_dtype=torch.uint8, expert_map=expert_map)
    load(module, layer, "weight_scale", "bias", torch.uint8)
    module.process_weights_after_loading()
    hidden, ids, weights = random_tokens(16, H, 8, 2, seed=26)
    local = expert_map[ids.long()]
    assert rel_err(module(hidden, weights, ids), reference_moe(layer, hidden, local, weights)) < 1e-2


def test_from_checkpoint_through_the_cpp_loader(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    layer = random_layer(E, H, I, bias=True, seed=27)
    prefix = "model.layers.5.mlp.experts."
    tensors = {prefix + "w13_weight": layer["w13"], prefix + "w2_weight": layer["w2"],
               prefix + "w13_weight_scale_inv": torch.exp2(layer["w13_scale"].float() - 127),
               prefix + "w2_weight_scale": layer["w2_scale"], prefix + "w13_bias": layer["w13_bias"],
               prefix + "w2_weight_bias": layer["w2_bias"],
               "model.layers.5.mlp.gate.weight": torch.randn(E, H)}
    path = tmp_path / "model.safetensors"
    safetensors.save_file(tensors, str(path))
    module = mt.Mxfp4MoE.from_checkpoint(path, 5, device="cpu")
    assert "fused" in module.description
    hidden, ids, weights = random_tokens(10, H, E, 2, seed=28)
    assert torch.equal(module(hidden, weights, ids), mt.fused_moe(hidden, mt.prepare(**layer), weights, ids))
    with pytest.raises(mt.Error, match="layer"):
        mt.Mxfp4MoE.from_checkpoint(path, 7, device="cpu")
