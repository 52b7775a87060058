"""Nvfp4MoE, the engine-level flow for NVFP4 checkpoints: vLLM/SGLang's fused names and ModelOpt's
per-expert names (experts.{e}.gate_proj.weight, .weight_scale F8_E4M3, .weight_scale_2, .input_scale),
process_weights_after_loading, forward; refused tensors stay on the module; from_checkpoint."""
import pytest
import torch

from mxmoe import torch as mt
from moe_data import random_nvfp4_layer, random_tokens, reference_moe_f64, rel_err

E, H, I = 8, 256, 128


def modelopt_state_dict(layer, prefix=""):
    """The layer under ModelOpt's per-expert names (what an hf_quant_config NVFP4 checkpoint stores)."""
    sd = {}
    for e in range(E):
        rows = {"gate_proj": slice(0, I), "up_proj": slice(I, 2 * I)}
        for col, (proj, r) in enumerate(rows.items()):
            sd[f"{prefix}experts.{e}.{proj}.weight"] = layer["w13"][e, r].clone()
            sd[f"{prefix}experts.{e}.{proj}.weight_scale"] = layer["w13_scale"][e, r].clone().view(torch.float8_e4m3fn)
            sd[f"{prefix}experts.{e}.{proj}.weight_scale_2"] = layer["w13_global_scale"][e, col].clone()
            sd[f"{prefix}experts.{e}.{proj}.input_scale"] = torch.tensor(0.5)
        sd[f"{prefix}experts.{e}.down_proj.weight"] = layer["w2"][e].clone()
        sd[f"{prefix}experts.{e}.down_proj.weight_scale"] = layer["w2_scale"][e].clone().view(torch.float8_e4m3fn)
        sd[f"{prefix}experts.{e}.down_proj.weight_scale_2"] = layer["w2_global_scale"][e].clone()
        sd[f"{prefix}experts.{e}.down_proj.input_scale"] = torch.tensor(0.5)
    return sd


def load_fused(module, layer):
    with torch.no_grad():
        module.w13_weight.copy_(layer["w13"])
        module.w2_weight.copy_(layer["w2"])
        module.w13_weight_scale.copy_(layer["w13_scale"].view(torch.float8_e4m3fn))
        module.w2_weight_scale.copy_(layer["w2_scale"].view(torch.float8_e4m3fn))
        module.w13_weight_scale_2.copy_(layer["w13_global_scale"])
        module.w2_weight_scale_2.copy_(layer["w2_global_scale"])
        module.w13_input_scale.fill_(1.0)
        module.w2_input_scale.fill_(1.0)
        if layer["w13_bias"] is not None:
            module.w13_bias.copy_(layer["w13_bias"])
            module.w2_bias.copy_(layer["w2_bias"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_fused_names(dtype, bias):
    layer = random_nvfp4_layer(E, H, I, bias=bias, seed=71)
    module = mt.Nvfp4MoE(E, H, I, params_dtype=dtype, has_bias=bias)
    load_fused(module, layer)
    module.process_weights_after_loading()
    assert not dict(module.named_parameters()), "the loader's tensors (input scales included) are gone"
    assert module.prepared.group == 16 and module.prepared.activation_dtype == dtype
    hidden, ids, weights = random_tokens(12, H, E, 2, seed=72)
    hidden = hidden.to(dtype)
    out = module(hidden, weights, ids)
    assert torch.equal(out, mt.fused_moe(hidden, mt.prepare(**layer), weights, ids))
    assert rel_err(out, reference_moe_f64(layer, hidden, ids, weights)) < {torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]


def test_fused_weight_scale_2_of_one_column():
    """vLLM's loaders may keep one global scale per expert for w13 ([E]): both columns take it."""
    layer = random_nvfp4_layer(E, H, I, seed=73)
    layer["w13_global_scale"] = layer["w13_global_scale"][:, :1].expand(E, 2).contiguous()
    module = mt.Nvfp4MoE(E, H, I)
    load_fused(module, layer)
    module.w13_weight_scale_2 = torch.nn.Parameter(layer["w13_global_scale"][:, 0].clone(), requires_grad=False)
    module.process_weights_after_loading()
    hidden, ids, weights = random_tokens(5, H, E, 2, seed=74)
    assert torch.equal(module(hidden, weights, ids), mt.fused_moe(hidden, mt.prepare(**layer), weights, ids))


def test_modelopt_per_expert_names_through_load_state_dict():
    layer = random_nvfp4_layer(E, H, I, seed=75)
    module = mt.Nvfp4MoE(E, H, I, layout="per_expert", params_dtype=None)
    missing, unexpected = module.load_state_dict(modelopt_state_dict(layer), strict=False)
    assert not missing and not unexpected
    module.process_weights_after_loading()
    assert not hasattr(module, "experts") and not dict(module.named_parameters())
    hidden, ids, weights = random_tokens(9, H, E, 3, seed=76)
    reference = mt.prepare(**layer)
    for dtype in (torch.bfloat16, torch.float16):  # params_dtype None: either, per call
        x = hidden.to(dtype)
        assert torch.equal(module(x, weights, ids), mt.fused_moe(x, reference, weights, ids))


@pytest.mark.parametrize("layout", ["fused", "per_expert"])
def test_refused_tensors_stay_on_the_module(layout):
    layer = random_nvfp4_layer(E, H, I, seed=77)
    module = mt.Nvfp4MoE(E, H, I, layout=layout)
    if layout == "fused":
        load_fused(module, layer)
        with torch.no_grad():
            module.w2_weight_scale.view(torch.uint8)[1, 2, 3] = 0xB0  # sign bit
        before = {n: p.detach().clone() for n, p in module.named_parameters()}
    else:
        sd = modelopt_state_dict(layer)
        sd["experts.1.down_proj.weight_scale"].view(torch.uint8)[2, 3] = 0xB0
        module.load_state_dict(sd)
        before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with pytest.raises(ValueError, match="w2_scale: byte 0xB0 at index \\[1, 2, 3\\] has its sign bit set"):
        module.process_weights_after_loading()
    after = dict(module.named_parameters())
    assert after.keys() == before.keys()
    for n, p in before.items():
        assert torch.equal(after[n].view(torch.uint8) if p.dtype == torch.float8_e4m3fn else after[n],
                           p.view(torch.uint8) if p.dtype == torch.float8_e4m3fn else p), n
    assert module.prepared is None


def test_missing_global_scale_names_the_aliases():
    module = mt.Nvfp4MoE(E, H, I)
    del module.w2_weight_scale_2
    with pytest.raises(LookupError, match="w2_global_scale: none of w2_weight_scale_2"):
        module.process_weights_after_loading()
    assert hasattr(module, "w13_weight") and hasattr(module, "w13_weight_scale_2")


def test_params_dtype_must_be_16_bit():
    with pytest.raises(TypeError, match="activation_dtype: float32, expected bfloat16 or float16"):
        mt.Nvfp4MoE(E, H, I, params_dtype=torch.float32)


def test_from_checkpoint_modelopt_nvfp4(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    layer = random_nvfp4_layer(E, H, I, seed=78)
    prefix = "model.layers.2.mlp."
    tensors = modelopt_state_dict(layer, prefix)
    tensors["model.layers.2.mlp.gate.weight"] = torch.randn(E, H)
    path = tmp_path / "model.safetensors"
    safetensors.save_file(tensors, str(path))
    module = mt.Mxfp4MoE.from_checkpoint(path, 2, device="cpu")
    assert isinstance(module, mt.Nvfp4MoE) and "NVFP4" in module.description
    assert module.prepared.group == 16
    hidden, ids, weights = random_tokens(10, H, E, 2, seed=79)
    assert torch.equal(module(hidden, weights, ids), mt.fused_moe(hidden, mt.prepare(**layer), weights, ids))
