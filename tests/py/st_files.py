#!/usr/bin/env python3
"""Test helper: writes MoE checkpoints with Python's safetensors package (and reads ours back).

  st_files.py write LAYOUT DIR [options]   LAYOUT: dsv4 | fused | gpt-oss
      DIR/model.safetensors (or shards + model.safetensors.index.json with --shards N) in LAYOUT,
      and DIR-expected.safetensors (beside DIR): the canonical tensors (numpy's own stacking / de-interleaving)
      that mxmoe's loader must produce: w13, w13_scale, w2, w2_scale [, w13_bias, w2_bias,
      router_weight, correction_bias, router_logit_bias].
  st_files.py dense NAMING DIR [options]   NAMING: w123 | proj | fused
      DIR/model.safetensors with unquantized experts (bf16 or f32) for `mxmoe quantize`.
  st_files.py dump FILE
      JSON on stdout: per tensor, dtype, shape and its bytes in hex (test files are small).
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors import TensorSpec, deserialize, serialize_file
from safetensors.numpy import save_file

TORCH_DTYPE = {"U8": "uint8", "I8": "int8", "F4": "float4_e2m1fn_x2", "F8_E8M0": "float8_e8m0fnu",
               "BF16": "bfloat16", "F32": "float32", "F16": "float16"}


class Raw:
    """Bytes with a safetensors dtype; `shape` is the storage shape (F4: bytes along the last dim)."""

    def __init__(self, dtype, array):
        self.dtype, self.array = dtype, np.ascontiguousarray(array)


def to_bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (no NaN here)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write(path, tensors, metadata=None):
    specs = {}
    for name, t in tensors.items():
        specs[name] = TensorSpec(dtype=TORCH_DTYPE[t.dtype], shape=list(t.array.shape),
                                 data_ptr=t.array.ctypes.data, data_len=t.array.nbytes)
    serialize_file(specs, path, metadata=metadata)


def write_sharded(out_dir, tensors, shards):
    if shards <= 1:
        write(os.path.join(out_dir, "model.safetensors"), tensors, {"format": "pt"})
        return
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        write(os.path.join(out_dir, fname), part, {"format": "pt"})
        weight_map.update({n: fname for n in part})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


def canonical(rng, E, H, I, biases, router):
    c = {
        "w13": rng.integers(0, 256, (E, 2 * I, H // 2), dtype=np.uint8),
        "w13_scale": rng.integers(115, 131, (E, 2 * I, H // 32), dtype=np.uint8),
        "w2": rng.integers(0, 256, (E, H, I // 2), dtype=np.uint8),
        "w2_scale": rng.integers(115, 131, (E, H, I // 32), dtype=np.uint8),
    }
    if biases:  # bf16-representable so a bf16 file holds them exactly
        c["w13_bias"] = bf16_to_f32(to_bf16_bits(rng.normal(0, 0.1, (E, 2 * I))))
        c["w2_bias"] = bf16_to_f32(to_bf16_bits(rng.normal(0, 0.1, (E, H))))
    if router:
        c["router_weight"] = bf16_to_f32(to_bf16_bits(rng.normal(0, 0.05, (E, H))))
        c["correction_bias"] = rng.normal(0, 0.01, (E,)).astype(np.float32)
    return c


def weight(arr, kind):
    """Packed bytes [..., K/2] stored as U8, I8 or F4."""
    if kind == "i8":
        return Raw("I8", arr.view(np.int8))
    return Raw("F4" if kind == "f4" else "U8", arr)


def scale(arr, kind):
    if kind == "f32":
        return Raw("F32", np.ldexp(np.float32(1), arr.astype(np.int32) - 127).astype(np.float32))
    if kind == "bf16":
        return Raw("BF16", to_bf16_bits(np.ldexp(np.float32(1), arr.astype(np.int32) - 127)))
    return Raw("F8_E8M0" if kind == "e8m0" else "U8", arr)


def bf16(arr):
    return Raw("BF16", to_bf16_bits(arr))


def layout_tensors(layout, c, a):
    E, I = c["w13"].shape[0], c["w13"].shape[1] // 2
    H = c["w2"].shape[1]
    p = a.prefix
    t = {}
    if layout == "fused":
        ex = p + "experts."
        v = a.alias_variant
        t[ex + "w13_weight"] = weight(c["w13"], a.weights)
        t[ex + ("w13_weight_scale_inv" if v else "w13_weight_scale")] = scale(c["w13_scale"], a.scales)
        t[ex + "w2_weight"] = weight(c["w2"], a.weights)
        t[ex + ("w2_weight_scale_inv" if v else "w2_weight_scale")] = scale(c["w2_scale"], a.scales)
        if "w13_bias" in c:
            t[ex + ("w13_bias" if v else "w13_weight_bias")] = Raw("F32", c["w13_bias"])
            t[ex + ("w2_bias" if v else "w2_weight_bias")] = bf16(c["w2_bias"])
        if "router_weight" in c:
            t[p + "gate.weight"] = bf16(c["router_weight"])
            t[p + "gate.e_score_correction_bias"] = Raw("F32", c["correction_bias"])
    elif layout == "dsv4":
        c.pop("w13_bias", None)  # the per-expert layout has no expert biases
        c.pop("w2_bias", None)
        for e in range(E):
            ex = f"{p}experts.{e}."
            t[ex + "w1.weight"] = weight(c["w13"][e, :I], a.weights)
            t[ex + "w3.weight"] = weight(c["w13"][e, I:], a.weights)
            t[ex + "w2.weight"] = weight(c["w2"][e], a.weights)
            t[ex + "w1.scale"] = scale(c["w13_scale"][e, :I], a.scales)
            t[ex + "w3.scale"] = scale(c["w13_scale"][e, I:], a.scales)
            t[ex + "w2.scale"] = scale(c["w2_scale"][e], a.scales)
        if "router_weight" in c:
            t[p + "gate.weight"] = bf16(c["router_weight"])
            t[p + "gate.bias"] = Raw("F32", c["correction_bias"])
    elif layout == "gpt-oss":
        ex = p + "experts."
        inter = np.empty_like(c["w13"])  # stored row 2r = gate row r, 2r + 1 = up row r
        inter[:, 0::2], inter[:, 1::2] = c["w13"][:, :I], c["w13"][:, I:]
        sc = np.empty_like(c["w13_scale"])
        sc[:, 0::2], sc[:, 1::2] = c["w13_scale"][:, :I], c["w13_scale"][:, I:]
        t[ex + "gate_up_proj_blocks"] = Raw("U8", inter.reshape(E, 2 * I, H // 32, 16))
        t[ex + "gate_up_proj_scales"] = scale(sc, a.scales)
        t[ex + "down_proj_blocks"] = Raw("U8", c["w2"].reshape(E, H, I // 32, 16))
        t[ex + "down_proj_scales"] = scale(c["w2_scale"], a.scales)
        if "w13_bias" in c:
            b = np.empty_like(c["w13_bias"])
            b[:, 0::2], b[:, 1::2] = c["w13_bias"][:, :I], c["w13_bias"][:, I:]
            t[ex + "gate_up_proj_bias"] = bf16(b)
            t[ex + "down_proj_bias"] = bf16(c["w2_bias"])
        if "router_weight" in c:
            t[p + "router.weight"] = bf16(c["router_weight"])
            c["router_logit_bias"] = c.pop("correction_bias")
            t[p + "router.bias"] = Raw("F32", c["router_logit_bias"])
    else:
        sys.exit(f"unknown layout {layout}")
    if layout != "fused":
        t["model.embed_tokens.weight"] = bf16(np.ones((4, 8), np.float32))  # a non-MoE neighbour
    return t


def cmd_write(a):
    rng = np.random.default_rng(a.seed)
    c = canonical(rng, a.E, a.H, a.I, a.biases, a.router)
    t = layout_tensors(a.layout, c, a)
    os.makedirs(a.dir, exist_ok=True)
    write_sharded(a.dir, t, a.shards)
    save_file({k: np.ascontiguousarray(v) for k, v in c.items()}, a.dir.rstrip("/") + "-expected.safetensors")


def cmd_dense(a):
    rng = np.random.default_rng(a.seed)
    E, H, I, p = a.E, a.H, a.I, a.prefix
    make = (lambda x: bf16(x)) if a.dtype == "bf16" else (lambda x: Raw("F32", x.astype(np.float32)))
    t = {}
    if a.naming == "fused":
        t[p + "experts.w13_weight"] = make(rng.normal(0, 0.05, (E, 2 * I, H)))
        t[p + "experts.w2_weight"] = make(rng.normal(0, 0.05, (E, H, I)))
    else:
        g, u, d = ("w1", "w3", "w2") if a.naming == "w123" else ("gate_proj", "up_proj", "down_proj")
        for e in range(E):
            t[f"{p}experts.{e}.{g}.weight"] = make(rng.normal(0, 0.05, (I, H)))
            t[f"{p}experts.{e}.{u}.weight"] = make(rng.normal(0, 0.05, (I, H)))
            t[f"{p}experts.{e}.{d}.weight"] = make(rng.normal(0, 0.05, (H, I)))
    if a.router:
        t[p + "gate.weight"] = make(rng.normal(0, 0.05, (E, H)))
    t["model.norm.weight"] = bf16(rng.normal(1, 0.1, (H,)))
    os.makedirs(a.dir, exist_ok=True)
    write(os.path.join(a.dir, "model.safetensors"), t, {"format": "pt"})


def cmd_dump(a):
    with open(a.file, "rb") as f:
        data = f.read()
    out = {}
    for name, t in deserialize(data):
        out[name] = {"dtype": t["dtype"], "shape": list(t["shape"]), "hex": bytes(t["data"]).hex()}
    json.dump(out, sys.stdout, sort_keys=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("layout")
    w.add_argument("dir")
    d = sub.add_parser("dense")
    d.add_argument("naming", choices=["w123", "proj", "fused"])
    d.add_argument("dir")
    d.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    for s in (w, d):
        s.add_argument("--E", type=int, default=4)
        s.add_argument("--H", type=int, default=64)
        s.add_argument("--I", type=int, default=32)
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--prefix", default="model.layers.3.mlp.")
        s.add_argument("--router", action="store_true")
    w.add_argument("--scales", choices=["u8", "e8m0", "f32", "bf16"], default="e8m0")
    w.add_argument("--weights", choices=["u8", "i8", "f4"], default="u8")
    w.add_argument("--biases", action="store_true")
    w.add_argument("--alias-variant", type=int, default=0)
    w.add_argument("--shards", type=int, default=1)
    u = sub.add_parser("dump")
    u.add_argument("file")
    a = ap.parse_args()
    {"write": cmd_write, "dense": cmd_dense, "dump": cmd_dump}[a.cmd](a)


if __name__ == "__main__":
    main()
