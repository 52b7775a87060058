#!/usr/bin/env python3
"""vLLM 0.33.0's Marlin MoE with NVFP4 weights, timed on one GPU the way the peer harness times its peers.

Issue 16 asks for NVFP4 "ahead of vLLM's Marlin NVFP4 MoE where you can measure it beside it"; the peer
harness (.peer/run_peers.py, a copy of /work/shared/peers/run_peers.py) only measures Marlin with MXFP4.
This script adds the NVFP4 row:

    python3 bench/peers/marlin_nvfp4.py --peer-dir .peer --out $OUT          # on the device (H200)
    python3 bench/peers/marlin_nvfp4.py --peer-dir .peer --dry-run           # here, no GPU needed

What is measured (PEERS.md method, the harness's own code imported, not copied):
  * weights: NVFP4 = E2M1 nibbles (low nibble = even k, the checkpoint layout the harness uses for MXFP4),
    one UE4M3 (float8_e4m3fn, positive) scale per 16 along K, one fp32 global scale per expert and matrix.
    vLLM's NVFP4 MoE keeps ONE w13 global scale per expert (ModelOpt checkpoints carry gate and up
    scale_2 separately; vLLM takes w13_weight_scale_2[:, 0]), so gate and up share it here (gate = up).
  * shapes dsv4-flash and gpt-oss-120b from run_peers.SHAPES; T = 1, 4, 16, 64, 256 (--tokens);
    activations bf16, and fp16 too (--dtypes; a refusal by the kernel is recorded as such);
    routed experts only: precomputed (topk_ids, topk_weights) from run_peers.gen_sets (same seeds as the
    harness, so the same inputs as its MXFP4 rows) -> combined [T, H] output; SiLU(gate) * up.
  * each row is CUDA-graph captured and replayed by run_peers.Timer (256 MiB memset L2 flush before each
    replay, outside the events; median of --iters after --warmup rotations; 4 rotated input sets).
  * correctness on every row (set 0): relative Frobenius error against a float32 torch reference of the
    same NVFP4 layer (dequantise e2m1 x ue4m3 x global, silu_mul MoE, top-k combine), eager and on the
    graph replay (output poisoned with NaN first). Marlin is expected at ~1e-2 or better.
  * by default also the harness's own Marlin MXFP4 peer (run_peers.child_peer, unchanged) in the same
    run, so that NVFP4 / MXFP4 is a same-session ratio (--no-mxfp4-anchor skips it).

Reused from run_peers.py (imported): SHAPES, gen_sets, experts_hit, rel_err, Timer, marlin_repack_fp4,
load_snippets (vllm_snippets: get_weight_perm, marlin_permute_scales, moe_align_block_size, and the
float4_e2m1f scalar-type id), child_setup, child_peer (the MXFP4 anchor), smi, _FP4 (E2M1 table).
vLLM's own NVFP4 scale functions (_nvfp4_compute_scale_factor, nvfp4_marlin_process_scales,
nvfp4_marlin_process_global_scale) are executed from the wheel's source (.peer/vllm_src/
marlin_utils_fp4.py) by extracting just those function definitions (the module itself imports vLLM).

Each (shape, activation dtype) runs in its own child process under a watchdog, as run_peers does, so a
crash or a hang (e.g. an illegal-address fault in the kernel) loses only that child; rows are appended to
a JSONL file as they finish and the parent rewrites $OUT/marlin_nvfp4_h200.{json,md} after every child.
"""
import argparse
import ast
import json
import os
import signal
import subprocess
import sys
import time
import traceback

SCRIPT = os.path.abspath(__file__)
REPO = os.path.abspath(os.path.join(os.path.dirname(SCRIPT), "..", ".."))
GROUP = 16                      # NVFP4 group size along K (FP4_MARLIN_SUPPORTED_GROUP_SIZES = [16])
ERR_FAIL = 3e-2                 # the harness's FAIL mark
TAG = "marlin_nvfp4_h200"


def log(*a):
    print(*a, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-dir", default=os.environ.get("PEER_DIR") or os.path.join(REPO, ".peer"),
                   help="folder setup.sh filled (run_peers.py, vllm/, vllm_src/, vllm_snippets.py)")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(os.getcwd(), "marlin_nvfp4_out"),
                   help="output folder (default $OUT)")
    p.add_argument("--shapes", default="dsv4-flash,gpt-oss-120b")
    p.add_argument("--tokens", default="1,4,16,64,256")
    p.add_argument("--dtypes", default="bf16,fp16", help="activation dtypes: bf16, fp16")
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="wall-clock budget of the whole run (the device allows 600 s a command)")
    p.add_argument("--child-limit-s", type=float, default=200.0, help="watchdog per child")
    p.add_argument("--pad-h", default="auto", choices=["auto", "vllm", "256"],
                   help="vllm: H unpadded as prepare_nvfp4_moe_layer_for_marlin does; 256: H zero-padded "
                        "to 256 (as the MXFP4 Marlin path does); auto: vllm, retried with 256 if that child "
                        "yields no row")
    p.add_argument("--no-mxfp4-anchor", action="store_true",
                   help="skip the harness's Marlin MXFP4 rows in the same run")
    p.add_argument("--work", default=os.environ.get("PEER_WORK", "/tmp/marlin_nvfp4_work"))
    p.add_argument("--dry-run", action="store_true", help="no GPU: imports, layouts on a tiny CPU shape, plan")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------
# imports of the harness and of vLLM's NVFP4 scale functions
# ------------------------------------------------------------------------------------------------

def import_harness(peer_dir):
    """Imports .peer/run_peers.py as a module (it runs nothing on import; it does `import triton`)."""
    peer_dir = os.path.abspath(peer_dir)
    if not os.path.isfile(os.path.join(peer_dir, "run_peers.py")):
        raise RuntimeError(f"no run_peers.py in --peer-dir {peer_dir} (run setup.sh: PEER_OUT=.peer "
                           f"bash /work/shared/peers/setup.sh, and carry .peer to the device)")
    os.environ["PEER_DIR"] = peer_dir   # run_peers.PEER_DIR (where vllm_snippets / vllm/ live)
    if peer_dir not in sys.path:
        sys.path.insert(0, peer_dir)
    import run_peers  # noqa: E402
    return run_peers


class _Logger:  # stands in for vllm.logger in the exec'd vLLM functions
    def warning_once(self, msg, *a):
        log("[vllm warning] " + (msg % a if a else msg))

    warning = info = info_once = debug = warning_once


VLLM_FP4_FUNCS = ("_nvfp4_compute_scale_factor", "nvfp4_marlin_process_scales",
                  "nvfp4_marlin_process_global_scale")


def load_vllm_fp4_funcs(peer_dir, torch):
    """Executes vLLM 0.33.0's own NVFP4 scale functions from .peer/vllm_src/marlin_utils_fp4.py.

    The module cannot be imported (it imports vllm.*), so only the three function definitions are taken
    from its AST and executed with `torch` and a stub logger: the code that runs is vLLM's, byte for byte.
    """
    path = os.path.join(peer_dir, "vllm_src", "marlin_utils_fp4.py")
    with open(path) as f:
        src = f.read()
    tree = ast.parse(src)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in VLLM_FP4_FUNCS]
    missing = set(VLLM_FP4_FUNCS) - {n.name for n in defs}
    if missing:
        raise RuntimeError(f"{path} lacks {sorted(missing)} (not vLLM 0.33.0's marlin_utils_fp4.py?)")
    ns = {"torch": torch, "logger": _Logger()}
    exec(compile(ast.Module(body=defs, type_ignores=[]), path, "exec"), ns)
    return {k: ns[k] for k in VLLM_FP4_FUNCS}


# ------------------------------------------------------------------------------------------------
# NVFP4 weights, reference, and the Marlin layer
# ------------------------------------------------------------------------------------------------

def gen_nvfp4_weights(torch, shp, seed, device, scale_codes=(88, 127)):
    """Checkpoint-layout NVFP4 weights (ModelOpt layout, what vLLM's loader hands to the Marlin prep):

    w13 uint8 [E, 2I, H/2], w2 uint8 [E, H, I/2]: E2M1 nibbles, low nibble = even k (as gen_weights);
    s13 float8_e4m3fn [E, 2I, H/16], s2 [E, H, I/16]: UE4M3 block scales, values 16..448 (codes 88..126;
    a real quantiser puts the block maxima near 448 = E4M3 max, so this is the realistic upper range);
    g13, g2 float32 [E]: global scales (vLLM's w13_weight_scale_2 / w2_weight_scale_2 after the loader
    took [:, 0]), 2^-16 x U[1, 2) -> weights of magnitude ~1e-2, outputs O(1): safe for fp16 too.
    """
    H, I, E = shp["H"], shp["I"], shp["E"]
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    u8 = dict(dtype=torch.uint8, device=device, generator=g)
    w13 = torch.randint(0, 256, (E, 2 * I, H // 2), **u8)
    lo, hi = scale_codes
    s13 = torch.randint(lo, hi, (E, 2 * I, H // GROUP), **u8).view(torch.float8_e4m3fn)
    w2 = torch.randint(0, 256, (E, H, I // 2), **u8)
    s2 = torch.randint(lo, hi, (E, H, I // GROUP), **u8).view(torch.float8_e4m3fn)
    g13 = (1.0 + torch.rand(E, device=device, generator=g)) * 2.0 ** -16
    g2 = (1.0 + torch.rand(E, device=device, generator=g)) * 2.0 ** -16
    return dict(w13=w13, s13=s13, g13=g13.float(), w2=w2, s2=s2, g2=g2.float())


def dequant_nvfp4(torch, fp4_table, packed, scales, gscale):
    """packed uint8 [N, K/2] (low nibble first), scales e4m3 [N, K/16], gscale fp32 scalar -> fp32 [N, K]."""
    lut = torch.tensor(fp4_table, dtype=torch.float32, device=packed.device)
    w = torch.stack([lut[(packed & 0xF).long()], lut[(packed >> 4).long()]], -1).flatten(-2)
    w = (w.unflatten(-1, (-1, GROUP)) * scales.float().unsqueeze(-1)).flatten(-2)
    return w * gscale.float()


def reference(torch, fp4_table, shp, wts, x, ids, tw):
    """float32 reference of the NVFP4 MoE layer on the experts this set hits (as run_peers.reference)."""
    H, I = shp["H"], shp["I"]
    x = x.float()
    ids = ids.long()
    out = torch.zeros(x.shape[0], H, dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        W13 = dequant_nvfp4(torch, fp4_table, wts["w13"][e], wts["s13"][e], wts["g13"][e])
        W2 = dequant_nvfp4(torch, fp4_table, wts["w2"][e], wts["s2"][e], wts["g2"][e])
        h = x[tok] @ W13.t()
        a = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
        out.index_add_(0, tok, (a @ W2.t()) * tw[tok, slot][:, None].float())
    return out


def padded_dims(H, I, pad_h):
    """prepare_nvfp4_moe_layer_for_marlin: K = hidden size unpadded (asserted % 64); the intermediate size
    N is zero-padded to 64 if K % 128 == 0 else to 128. pad_h=256 additionally zero-pads H (fallback)."""
    Hp = H if pad_h in ("vllm", None) else -(-H // int(pad_h)) * int(pad_h)
    if Hp % 128 == 0:
        Ip = -(-I // 64) * 64
    else:
        if Hp % 64:
            raise RuntimeError(f"hidden_size = {Hp} unsupported by Marlin tiles (vLLM asserts K % 64 == 0)")
        Ip = -(-I // 128) * 128
    return Hp, Ip


def block_size_m(M, k, E):
    """vLLM fused_marlin_moe's block_size_m heuristic (no EP, 16-bit activations)."""
    for bsm in [8, 16, 32, 48, 64]:
        if M * k / E / bsm < 0.9:
            break
    return bsm


class MarlinNVFP4:
    """vLLM 0.33.0 fused_marlin_moe data flow on moe_wna16_marlin_gemm with NVFP4 weights.

    Preparation follows prepare_nvfp4_moe_layer_for_marlin (vllm_src/marlin_utils_fp4.py) step by step:
      1. pad (pad_w13 / pad_w2): each of gate / up zero-padded from I to Ip rows; w2's K (I) zero-padded.
         (Zero nibbles, zero scales: the padded columns of gate_up are 0, silu(0) * 0 = 0.)
      2. weights: _repack_marlin_experts = per expert gptq_marlin_repack(weight[e].view(int32).T, size_k,
         size_n, num_bits=4). That op lives in vLLM's _C library, not carried; run_peers.marlin_repack_fp4
         is the harness's torch re-implementation of exactly that repack (the layout of vLLM's
         marlin_weights() reference packer), already validated against the kernel by the harness's MXFP4
         Marlin row (4.4e-3) -- the E2M1 nibble layout is the same for NVFP4 and MXFP4.
         Result int32 [E, K/16, 2N] (N = output size of the GEMM).
      3. scales, per expert as vLLM loops: s = scale.to(param_dtype) (e4m3 -> bf16/fp16, exact);
         combined_scale_factor = _nvfp4_compute_scale_factor(all experts' scales, param_dtype) (a power of
         two so that every non-zero scale * 2^7 >= 2; 1.0 for fp16 activations);
         marlin_permute_scales(s[e].T [K/16, N], size_k, size_n, group_size=16) (the 64-wide scale_perm);
         nvfp4_marlin_process_scales(.., scale_factor=combined, a_dtype=param_dtype): to half, the
         [0, 2, 1, 3] interleave of each 4 for the fp8 dequant, * factor * 2^7, (<2 -> 0), int16 << 1 and
         keep the high byte: the S0E5M3 byte the kernel expands. Result float8_e4m3fn [E, K/16, N].
      4. global scales: nvfp4_marlin_process_global_scale(g, param_dtype) (x 2^(126-7) for bf16,
         x 2^(14-7) for fp16: the exponent bias the bit-shift dequant leaves out) / combined factor;
         float32 [E] (the kernel checks "scalar type of global_scale must be float").
    The three scale functions are vLLM's own code (load_vllm_fp4_funcs).
    Forward = _fused_marlin_moe without an input quantisation: moe_align_block_size -> GEMM1 (top_k=k,
    mul_topk_weights=False) -> silu(gate) * up -> GEMM2 (top_k=1, mul_topk_weights=True) -> sum over k,
    exactly as run_peers.Marlin does for MXFP4 plus the global_scale argument.
    """

    def __init__(self, torch, rp, vs, fns, fp4_id, shp, wts, act_dtype, pad_h, device="cuda",
                 with_workspace=True):
        self.torch, self.vs, self.fp4_id, self.shp = torch, vs, fp4_id, shp
        self.dtype = act_dtype
        H, I, E = shp["H"], shp["I"], shp["E"]
        Hp, Ip = padded_dims(H, I, pad_h)
        self.Hp, self.Ip = Hp, Ip
        F = torch.nn.functional

        def pad13(t, per_byte):  # [E, 2I, c] -> [E, 2Ip, Hp/per_byte]: pad_w13 (+ H columns when padded)
            t = t.view(E, 2, I, t.shape[-1])
            t = F.pad(t, (0, Hp // per_byte - t.shape[-1], 0, Ip - I))
            return t.reshape(E, 2 * Ip, -1).contiguous()

        def pad2(t, per_byte):   # [E, H, c] -> [E, Hp, Ip/per_byte]: pad_w2 (+ H rows when padded)
            return F.pad(t, (0, Ip // per_byte - t.shape[-1], 0, Hp - H)).contiguous()

        # float8 tensors cannot be padded directly: pad their bytes (0x00 = +0.0)
        u8 = lambda t: t.view(torch.uint8)
        f8 = lambda t: t.view(torch.float8_e4m3fn)
        w13, s13 = pad13(wts["w13"], 2), f8(pad13(u8(wts["s13"]), GROUP))
        w2, s2 = pad2(wts["w2"], 2), f8(pad2(u8(wts["s2"]), GROUP))
        perm = vs.get_weight_perm(4).to(device)
        self.w1 = rp.marlin_repack_fp4(torch, w13, perm)      # [E, Hp/16, 2 * 2Ip] int32
        self.w2 = rp.marlin_repack_fp4(torch, w2, perm)       # [E, Ip/16, 2 * Hp] int32
        del w13, w2
        self.s1, self.g1, sf1 = self.scales(fns, s13, wts["g13"], size_k=Hp, size_n=2 * Ip)
        self.s2, self.g2, sf2 = self.scales(fns, s2, wts["g2"], size_k=Ip, size_n=Hp)
        if with_workspace:
            sms = torch.cuda.get_device_properties(0).multi_processor_count
            # vLLM get_marlin_workspace: sms * MARLIN_MAX_BLOCKS_PER_SM (4) int32, zeroed (as run_peers)
            self.workspace = torch.zeros(sms * 4, dtype=torch.int32, device=device)
        self.notes = dict(padded_H=Hp, padded_I=Ip, scale_factor_w13=sf1, scale_factor_w2=sf2,
                          act_dtype=str(act_dtype).replace("torch.", ""),
                          w1=list(self.w1.shape), s1=list(self.s1.shape), g1=list(self.g1.shape),
                          w2=list(self.w2.shape), s2=list(self.s2.shape), g2=list(self.g2.shape))

    def scales(self, fns, s, g, size_k, size_n):
        """permute_scales of prepare_nvfp4_moe_layer_for_marlin, per expert as vLLM does it."""
        torch, vs = self.torch, self.vs
        s = s.to(self.dtype)                                            # scales.to(param_dtype)
        sf = fns["_nvfp4_compute_scale_factor"](s, self.dtype)          # one factor for all experts
        out = []
        for e in range(s.shape[0]):
            ms = vs.marlin_permute_scales(s=s[e].T, size_k=size_k, size_n=size_n, group_size=GROUP)
            ms, _ = fns["nvfp4_marlin_process_scales"](ms, scale_factor=sf, a_dtype=self.dtype)
            out.append(ms)
        scales = torch.stack(out, 0).contiguous()                        # float8_e4m3fn [E, K/16, N]
        gs = fns["nvfp4_marlin_process_global_scale"](g, self.dtype) / sf
        return scales, gs.to(torch.float32).contiguous(), float(sf)

    def calls(self, M):
        """The two kernel calls, spelled with the exact argument values (shapes for tensors)."""
        shp = self.shp
        E, k, H = shp["E"], shp["k"], shp["H"]
        Hp, Ip = self.Hp, self.Ip
        dt = str(self.dtype).replace("torch.", "")
        bsm = block_size_m(M, k, E)
        t = lambda name, shape, d: f"{name}:{d}{list(shape)}"
        al = (f"sorted_token_ids, expert_ids, num_tokens_past_padded = moe_align_block_size(topk_ids:int32[{M}, {k}], "
              f"block_size={bsm}, num_experts={E}, expert_map=None, ignore_invalid_experts=True)"
              f"  # -> torch.ops._moe_C.moe_align_block_size")
        common = (f"workspace:int32[{self.workspace.numel() if hasattr(self, 'workspace') else 'sms*4'}], "
                  f"sorted_token_ids, expert_ids, num_tokens_past_padded, topk_weights:float32[{M}, {k}], "
                  f"moe_block_size={bsm}")
        g1 = (f"torch.ops._moe_C.moe_wna16_marlin_gemm({t('a', [M, Hp], dt)}, {t('c', [M * k, 2 * Ip], dt)}, "
              f"{t('b_q_weight', self.w1.shape, 'int32')}, b_bias=None, "
              f"{t('b_scales', self.s1.shape, 'float8_e4m3fn')}, a_scales=None, "
              f"{t('global_scale', self.g1.shape, 'float32')}, b_zeros=None, {common}, top_k={k}, "
              f"mul_topk_weights=False, b_type_id=scalar_types.float4_e2m1f.id={self.fp4_id}, size_m={M}, "
              f"size_n={2 * Ip}, size_k={Hp}, use_atomic_add=False, use_fp32_reduce=True, is_zp_float=False, "
              f"thread_k=-1, thread_n=-1, blocks_per_sm=-1)")
        act = f"a2 = silu(c[:, :{Ip}]) * c[:, {Ip}:]  # {dt}[{M * k}, {Ip}]"
        g2 = (f"torch.ops._moe_C.moe_wna16_marlin_gemm({t('a2', [M * k, Ip], dt)}, {t('c3', [M * k, Hp], dt)}, "
              f"{t('b_q_weight', self.w2.shape, 'int32')}, b_bias=None, "
              f"{t('b_scales', self.s2.shape, 'float8_e4m3fn')}, a_scales=None, "
              f"{t('global_scale', self.g2.shape, 'float32')}, b_zeros=None, {common}, top_k=1, "
              f"mul_topk_weights=True, b_type_id={self.fp4_id}, size_m={M * k}, size_n={Hp}, size_k={Ip}, "
              f"use_atomic_add=False, use_fp32_reduce=True, is_zp_float=False, thread_k=-1, thread_n=-1, "
              f"blocks_per_sm=-1)")
        comb = f"out = c3.view({M}, {k}, {Hp}).sum(1)" + (f"[:, :{H}]" if Hp != H else "")
        pre = [f"x padded to {Hp} columns (zeros)"] if Hp != H else []
        return pre + [al, g1, act, g2, comb]

    def make(self, x, ids, tw):
        torch, shp, vs = self.torch, self.shp, self.vs
        H, E, k = shp["H"], shp["E"], shp["k"]
        Hp, Ip = self.Hp, self.Ip
        M = x.shape[0]
        bsm = block_size_m(M, k, E)
        op = torch.ops._moe_C.moe_wna16_marlin_gemm
        dt = x.dtype

        def fn():
            xin = torch.nn.functional.pad(x, (0, Hp - H)) if Hp != H else x
            sorted_ids, expert_ids, ntp = vs.moe_align_block_size(ids, bsm, E, None,
                                                                  ignore_invalid_experts=True)
            c1 = torch.empty((M * k, 2 * Ip), dtype=dt, device=x.device)
            c1 = op(xin, c1, self.w1, None, self.s1, None, self.g1, None, self.workspace, sorted_ids,
                    expert_ids, ntp, tw, bsm, k, False, self.fp4_id, M, 2 * Ip, Hp, False, True, False,
                    -1, -1, -1)
            c2 = torch.nn.functional.silu(c1[:, :Ip]) * c1[:, Ip:]
            c3 = torch.empty((M * k, Hp), dtype=dt, device=x.device)
            c3 = op(c2, c3, self.w2, None, self.s2, None, self.g2, None, self.workspace, sorted_ids,
                    expert_ids, ntp, tw, bsm, 1, True, self.fp4_id, M * k, Hp, Ip, False, True, False,
                    -1, -1, -1)
            out = torch.sum(c3.view(M, k, Hp), dim=1)
            return out[:, :H] if Hp != H else out
        self.last_block_m = bsm
        return fn


# ------------------------------------------------------------------------------------------------
# child: everything that touches the GPU
# ------------------------------------------------------------------------------------------------

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def child_main(spec):
    rows_f = open(spec["rows"], "a")

    def emit(rec):
        rows_f.write(json.dumps(rec) + "\n")
        rows_f.flush()

    task = spec["task"]
    try:
        rp = import_harness(spec["peer_dir"])
    except Exception as ex:
        log(f"[{task}] harness import FAILED: {ex!r}")
        traceback.print_exc()
        emit(dict(kind="error", task=task, stage="import run_peers", error=repr(ex)[:2000]))
        return 2
    if task == "mxfp4_anchor":
        # the harness's own Marlin MXFP4 peer, unchanged (its rows: kind=row, impl=vllm_marlin_moe_mxfp4)
        cfg = dict(shapes=spec["shapes"], tokens=spec["tokens"], iters=spec["iters"], warmup=spec["warmup"])
        rows_f.close()
        try:
            rp.child_peer("vllm_marlin_moe_mxfp4", cfg, spec["rows"])
        except Exception as ex:  # child_peer catches per-row errors itself; this is setup (CUDA init, .so)
            log(f"[{task}] FAILED: {ex!r}")
            traceback.print_exc()
            with open(spec["rows"], "a") as f:
                f.write(json.dumps(dict(kind="error", task=task, stage="setup", error=repr(ex)[:2000])) + "\n")
            return 2
        return 0

    sname, dname, pad_h = spec["shape"], spec["dtype"], spec["pad_h"]
    where = f"[nvfp4 {sname} {dname} pad_h={pad_h}]"
    try:
        torch = rp.child_setup()        # sys.path, cache dirs, tf32 off, torch.cuda.init()
        vs, fp4_id = rp.load_snippets()
        lib = os.path.join(rp.PEER_DIR, "vllm", "_moe_C_stable_libtorch.abi3.so")
        torch.ops.load_library(lib)     # as run_peers.child_peer does for Marlin
        fns = load_vllm_fp4_funcs(rp.PEER_DIR, torch)
        props = torch.cuda.get_device_properties(0)
        emit(dict(kind="device", name=props.name, cc=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                  torch=torch.__version__, cuda=torch.version.cuda))
    except Exception as ex:
        log(f"{where} setup FAILED: {ex!r}")
        traceback.print_exc()
        emit(dict(kind="error", task=task, shape=sname, dtype=dname, pad_h=pad_h, stage="setup", error=repr(ex)[:2000]))
        return 2
    dtype = getattr(torch, DTYPES[dname])
    shp = rp.SHAPES[sname]
    si = list(rp.SHAPES).index(sname)       # run_peers seeds by shape index: same inputs as its rows
    timer = rp.Timer(torch, spec["iters"], spec["warmup"])
    t0 = time.time()
    try:
        wts = gen_nvfp4_weights(torch, shp, seed=4321 + si, device="cuda")
        impl = MarlinNVFP4(torch, rp, vs, fns, fp4_id, shp, wts, dtype, pad_h)
        torch.cuda.synchronize()
    except Exception as ex:
        log(f"{where} prepare FAILED: {ex!r}")
        traceback.print_exc()
        emit(dict(kind="error", task=task, shape=sname, dtype=dname, pad_h=pad_h, stage="prepare", error=repr(ex)[:2000]))
        return 2
    calls = impl.calls(spec["tokens"][0])
    emit(dict(kind="note", task=task, shape=sname, dtype=dname, pad_h=pad_h, prepare_s=round(time.time() - t0, 2),
              notes=impl.notes, calls=calls))
    log(f"{where} weights prepared in {time.time() - t0:.1f}s {impl.notes}")
    log(f"{where} vLLM calls (T={spec['tokens'][0]}):\n    " + "\n    ".join(calls))
    for T in spec["tokens"]:
        t1 = time.time()
        try:
            sets = rp.gen_sets(torch, shp, T, seed=77 + si)
            for st in sets:
                st["x"] = st["x"].to(dtype).contiguous()
            fns_ = [impl.make(st["x"], st["ids"], st["w"]) for st in sets]
            rec = dict(kind="row", task=task, shape=sname, T=T, dtype=dname, pad_h=pad_h,
                       padded_H=impl.Hp, padded_I=impl.Ip, rotated_sets=len(sets),
                       experts_hit=rp.experts_hit(torch, sets), block_size_m=impl.last_block_m, cuda_graph=True)
            ref = reference(torch, rp._FP4, shp, wts, sets[0]["x"], sets[0]["ids"], sets[0]["w"])
            te = time.time()
            eager = fns_[0]()
            torch.cuda.synchronize()
            rec["first_call_s"] = round(time.time() - te, 2)   # includes the driver's PTX JIT on the first row
            rec["rel_fro_err"] = rp.rel_err(torch, eager, ref)
            del eager
            graphs, outs = timer.capture(fns_)
            outs[0].fill_(float("nan"))
            graphs[0].replay()
            torch.cuda.synchronize()
            rec["rel_fro_err_graph"] = rp.rel_err(torch, outs[0], ref)
            rec.update(timer.time(graphs))
            rec["wall_s"] = round(time.time() - t1, 2)
            emit(rec)
            log(f"{where} T={T:4d}: {rec['time_us']:8.1f} us (p10 {rec['p10_us']:.1f}, p90 {rec['p90_us']:.1f}) "
                f"err {rec['rel_fro_err']:.2e}/{rec['rel_fro_err_graph']:.2e} bsm {impl.last_block_m} "
                f"hit {rec['experts_hit']:.1f} [{rec['wall_s']}s]")
            del graphs, outs, fns_, sets, ref
        except Exception as ex:
            log(f"{where} T={T} FAILED: {ex!r}")
            traceback.print_exc()
            emit(dict(kind="error", task=task, shape=sname, dtype=dname, pad_h=pad_h, T=T, stage="row",
                      error=repr(ex)[:2000]))
            msg = repr(ex).lower()
            if "cuda" in msg or "illegal" in msg or "accelerator" in msg:
                log(f"{where} a CUDA error may have poisoned the context: this child stops here")
                return 3
    return 0


# ------------------------------------------------------------------------------------------------
# parent: watchdog, merge, tables (touches no GPU)
# ------------------------------------------------------------------------------------------------

def run_child(spec, limit_s):
    if os.path.exists(spec["rows"]):
        os.remove(spec["rows"])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("CUDA_CACHE_MAXSIZE", str(4 << 30))  # keep the driver's PTX JIT cache across children
    t0 = time.time()
    log(f"=== {spec['name']}: start (watchdog {limit_s:.0f}s)")
    status = "ok"
    try:
        p = subprocess.Popen([sys.executable, SCRIPT, "--child", json.dumps(spec)], start_new_session=True, env=env)
        try:
            rc = p.wait(timeout=max(5.0, limit_s))
            if rc != 0:
                status = f"exit code {rc}"
        except subprocess.TimeoutExpired:
            status = f"killed by watchdog after {limit_s:.0f}s"
            try:
                os.killpg(p.pid, signal.SIGKILL)   # the child's own process group, started above
            except ProcessLookupError:
                pass
            p.wait()
    except Exception as ex:
        status = f"could not start: {ex!r}"
    wall = time.time() - t0
    log(f"=== {spec['name']}: {status} in {wall:.0f}s")
    recs = []
    if os.path.exists(spec["rows"]):
        with open(spec["rows"]) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    for r in recs:
        r.setdefault("task", spec["name"])
    return recs, dict(task=spec["name"], status=status, wall_s=round(wall, 1))


def summarize(args, cfg, recs, children, t_start, rp=None):
    rows = [r for r in recs if r.get("kind") == "row" and r.get("impl") is None]
    mx = {(r["shape"], r["T"]): r for r in recs if r.get("kind") == "row" and r.get("impl") == "vllm_marlin_moe_mxfp4"}
    shapes = {}
    if rp is not None:
        shapes = rp.SHAPES
    for r in rows:
        shp = shapes.get(r["shape"])
        if shp:
            r["weight_bytes"] = r["experts_hit"] * 3 * shp["H"] * shp["I"] * (0.5 + 1 / GROUP)  # E2M1 + UE4M3
            r["GBps"] = r["weight_bytes"] / (r["time_us"] * 1e-6) / 1e9
        m = mx.get((r["shape"], r["T"]))
        if m and r["dtype"] == "bf16":
            r["marlin_mxfp4_us"] = m["time_us"]
            r["nvfp4_over_mxfp4"] = r["time_us"] / m["time_us"]
        r["marlin_nvfp4_us"] = r["time_us"]
        r["err"] = r.get("rel_fro_err")
    res = dict(date=time.strftime("%Y-%m-%d %H:%M"), what="vLLM 0.33.0 Marlin MoE, NVFP4 weights",
               device=next((r for r in recs if r.get("kind") == "device"), {}),
               nvidia_smi=(rp.smi() if rp is not None else {}), config=cfg, children=children,
               rows=rows, mxfp4_anchor_rows=list(mx.values()),
               notes=[r for r in recs if r.get("kind") == "note"],
               errors=[r for r in recs if r.get("kind") == "error"],
               wall_s=round(time.time() - t_start, 1))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, TAG + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    try:
        md = markdown(res)
    except Exception as ex:  # never lose the run to a table bug: the JSON above has everything
        md = f"# marlin_nvfp4: markdown table failed ({ex!r}); see {TAG}.json\n"
        traceback.print_exc()
    with open(os.path.join(args.out, TAG + ".md"), "w") as f:
        f.write(md)
    return res, md


def markdown(res):
    L = []
    dev = res["device"]
    L.append(f"# vLLM Marlin MoE with NVFP4 weights on {dev.get('name', '?')} ({res['date']})\n")
    L.append(f"torch {dev.get('torch')}, CUDA {dev.get('cuda')}; nvidia-smi: {res['nvidia_smi']}\n")
    L.append("Method of PEERS.md through run_peers.py's own code (gen_sets inputs, Timer: CUDA graph, 256 MiB "
             "L2 flush, median). NVFP4 = E2M1 + UE4M3 per 16 + fp32 global per expert and matrix; gate and up "
             "share the w13 global scale (vLLM's NVFP4 MoE keeps one per expert). Routed experts only, "
             "topk ids/weights -> combined output; silu(gate) * up. err = relative Frobenius error vs an fp32 "
             "reference of the same NVFP4 layer, set 0, eager / graph replay. GB/s = experts hit x 3HI x 9/16 "
             "bytes / time. MXFP4 column: the harness's Marlin MXFP4 peer in the same run (bf16).\n")
    L.append("| shape | T | act | experts hit | block_m | marlin_nvfp4_us | p10-p90 | GB/s | err (eager / graph) "
             "| marlin_mxfp4_us | nvfp4/mxfp4 |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {s: i for i, s in enumerate(res["config"].get("shapes", []))}
    for r in sorted(res["rows"], key=lambda r: (order.get(r["shape"], 99), r["dtype"] != "bf16", r["T"])):
        err = r.get("rel_fro_err", float("nan"))
        errg = r.get("rel_fro_err_graph", float("nan"))
        flag = "" if (err < ERR_FAIL and errg < ERR_FAIL) else " FAIL"
        mxs = f"{r['marlin_mxfp4_us']:.1f}" if "marlin_mxfp4_us" in r else "-"
        ratio = f"{r['nvfp4_over_mxfp4']:.2f}" if "nvfp4_over_mxfp4" in r else "-"
        pad = f" (H pad {r['padded_H']})" if r.get("pad_h") not in ("vllm", None) else ""
        L.append(f"| {r['shape']}{pad} | {r['T']} | {r['dtype']} | {r['experts_hit']:.1f} | {r['block_size_m']} | "
                 f"**{r['time_us']:.1f}** | {r['p10_us']:.1f}-{r['p90_us']:.1f} | {r.get('GBps', 0):.0f} | "
                 f"{err:.2e} / {errg:.2e}{flag} | {mxs} | {ratio} |")
    if not res["rows"]:
        L.append("| (no row measured) | | | | | | | | | | |")
    if res["mxfp4_anchor_rows"]:
        L.append("\nMXFP4 anchor (run_peers Marlin MXFP4, bf16), err at its check T: " + ", ".join(
            f"{r['shape']} T={r['check_T']}: {r['rel_fro_err']:.2e}/{r['rel_fro_err_graph']:.2e}"
            for r in res["mxfp4_anchor_rows"] if "rel_fro_err" in r))
    L.append("\n## Preparation and the exact vLLM calls\n")
    for n in res["notes"]:
        L.append(f"- {n.get('shape')} {n.get('dtype')} pad_h={n.get('pad_h')}: prepared in {n.get('prepare_s')} s; "
                 f"{n.get('notes')}")
        for c in n.get("calls", []):
            L.append(f"    - `{c}`")
    if res["errors"]:
        L.append("\n## Errors\n")
        for e in res["errors"]:
            L.append(f"- {e.get('task')} {e.get('shape', '')} {e.get('dtype', '')} T={e.get('T', '-')}: "
                     f"{e.get('stage')}: `{str(e.get('error'))[:400]}`")
    L.append("\n## Children\n")
    for ch in res["children"]:
        L.append(f"- {ch['task']}: {ch['status']}, {ch['wall_s']} s")
    return "\n".join(L) + "\n"


def plan(args):
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    alias = {"dsv4": "dsv4-flash", "gptoss": "gpt-oss-120b", "gpt-oss": "gpt-oss-120b"}
    shapes = [alias.get(s, s) for s in shapes]
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            raise SystemExit(f"unknown dtype {d!r}; known: {list(DTYPES)}")
    return shapes, tokens, dtypes


def main_parent(args):
    t_start = time.time()
    shapes, tokens, dtypes = plan(args)
    try:
        rp = import_harness(args.peer_dir)
    except Exception as ex:
        log(f"FATAL: cannot import the harness from {args.peer_dir}: {ex!r}")
        traceback.print_exc()
        rp = None
    if rp is not None:
        bad = [s for s in shapes if s not in rp.SHAPES]
        if bad:
            raise SystemExit(f"unknown shape(s) {bad}; known: {list(rp.SHAPES)}")
        shapes = [s for s in rp.SHAPES if s in shapes]   # harness order: its seeds follow it
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    cfg = dict(shapes=shapes, tokens=tokens, dtypes=dtypes, iters=args.iters, warmup=args.warmup,
               pad_h=args.pad_h, budget_s=args.budget_s, peer_dir=os.path.abspath(args.peer_dir),
               mxfp4_anchor=not args.no_mxfp4_anchor)
    log(f"marlin_nvfp4: {cfg} out={args.out}")
    base = dict(peer_dir=os.path.abspath(args.peer_dir), tokens=tokens, iters=args.iters, warmup=args.warmup)
    queue = []
    pad0 = "vllm" if args.pad_h == "auto" else args.pad_h
    for d in dtypes:
        if d != "bf16" and "bf16" in dtypes and not args.no_mxfp4_anchor and not any(
                q["task"] == "mxfp4_anchor" for q in queue):
            queue.append(dict(base, task="mxfp4_anchor", name="mxfp4_anchor", shapes=shapes))
        for s in shapes:
            queue.append(dict(base, task="nvfp4", name=f"nvfp4_{s}_{d}_pad{pad0}", shape=s, dtype=d, pad_h=pad0))
    if not args.no_mxfp4_anchor and not any(q["task"] == "mxfp4_anchor" for q in queue):
        queue.append(dict(base, task="mxfp4_anchor", name="mxfp4_anchor", shapes=shapes))
    recs, children, pad_for = [], [], {}
    res, md = summarize(args, cfg, recs, children, t_start, rp)
    if rp is None:
        log(md)
        return 2
    while queue:
        spec = queue.pop(0)
        spec["rows"] = os.path.join(args.work, f"rows_{spec['name']}.jsonl")
        left = args.budget_s - (time.time() - t_start)
        if left < 30:
            children.append(dict(task=spec["name"], status="skipped: run budget spent", wall_s=0))
            log(f"=== {spec['name']}: skipped, run budget spent")
            continue
        limit = min(args.child_limit_s * (len(shapes) if spec["task"] == "mxfp4_anchor" else 1), left - 10)
        r, ch = run_child(spec, limit)
        recs += r
        children.append(ch)
        # --pad-h auto: if the layer was built but the kernel gave no row with H unpadded (vLLM's NVFP4
        # layout; gpt-oss H=2880 is not a multiple of 128), retry once with H zero-padded to 256 (the
        # MXFP4 Marlin layout the harness uses), and keep that padding for this shape's later children.
        # Setup failures (no GPU, library) are not retried: padding cannot help them.
        if spec["task"] == "nvfp4":
            got_rows = any(x.get("kind") == "row" for x in r)
            layer_failed = any(x.get("kind") == "error" and x.get("stage") in ("prepare", "row") for x in r) \
                or (not got_rows and any(x.get("kind") == "note" for x in r))
            if got_rows and spec["pad_h"] == "256" and args.pad_h == "auto":
                pad_for[spec["shape"]] = "256"
            if (args.pad_h == "auto" and spec["pad_h"] == "vllm" and not got_rows and layer_failed
                    and rp.SHAPES[spec["shape"]]["H"] % 256):
                log(f"=== {spec['name']}: no row with H unpadded; retrying with H zero-padded to 256")
                queue.insert(0, dict(spec, name=spec["name"].replace("padvllm", "pad256"), pad_h="256"))
            for q in queue:  # later children of a shape that needed the padding start with it
                if q["task"] == "nvfp4" and pad_for.get(q["shape"]) == "256" and q["pad_h"] == "vllm":
                    q.update(pad_h="256", name=q["name"].replace("padvllm", "pad256"))
        res, md = summarize(args, cfg, recs, children, t_start, rp)
    log("\n" + md)
    log(f"wrote {os.path.join(args.out, TAG + '.json')} and .md")
    return 0 if res["rows"] else 1


# ------------------------------------------------------------------------------------------------
# dry run: no GPU
# ------------------------------------------------------------------------------------------------

def dry_run(args):
    """Everything up to needing CUDA, plus the layout code on a tiny CPU shape. Returns 0 if all passed."""
    ok = True

    def check(name, fn):
        nonlocal ok
        try:
            r = fn()
            shown = r if isinstance(r, str) else None
            log(f"[dry-run] OK   {name}" + (f": {shown}" if shown else ""))
            return r
        except Exception as ex:
            ok = False
            log(f"[dry-run] FAIL {name}: {ex!r}")
            traceback.print_exc()
            return None

    shapes, tokens, dtypes = plan(args)
    log(f"[dry-run] shapes={shapes} tokens={tokens} dtypes={dtypes} peer_dir={args.peer_dir} out={args.out}")
    import torch
    rp = check("import run_peers (the harness)", lambda: import_harness(args.peer_dir))
    if rp is None:
        return 1
    log(f"[dry-run] run_peers.PEER_DIR={rp.PEER_DIR}; SHAPES={rp.SHAPES}")
    snip = check("run_peers.load_snippets (vllm_snippets + float4_e2m1f id)", lambda: rp.load_snippets())
    fns = check("vLLM NVFP4 scale functions from vllm_src/marlin_utils_fp4.py",
                lambda: load_vllm_fp4_funcs(rp.PEER_DIR, torch))
    lib = os.path.join(rp.PEER_DIR, "vllm", "_moe_C_stable_libtorch.abi3.so")
    check("vLLM MoE library present", lambda: f"{lib} {os.path.getsize(lib) >> 20} MiB")
    if snip is None or fns is None:
        return 1
    vs, fp4_id = snip
    log(f"[dry-run] float4_e2m1f id = {fp4_id}")

    # the plan for the real shapes: padding and the calls (no tensors)
    for s in shapes:
        shp = rp.SHAPES[s]
        Hp, Ip = padded_dims(shp["H"], shp["I"], "vllm")
        log(f"[dry-run] {s}: H={shp['H']} I={shp['I']} E={shp['E']} k={shp['k']} -> K(H)={Hp} (unpadded, as vLLM), "
            f"N(I) padded to {Ip}; GEMM1 size_n={2 * Ip} size_k={Hp}; GEMM2 size_n={Hp} size_k={Ip}; "
            f"block_size_m by T: {[(T, block_size_m(T, shp['k'], shp['E'])) for T in tokens]}")

    # tiny CPU shape through the same preparation: H=192 (K % 128 != 0 -> I padded to 128, as gpt-oss)
    tiny = dict(H=192, I=96, E=3, k=2)
    # second variant: block scales capped at 224 (codes 72..118), so that vLLM's power-of-two
    # scale_factor (2 for bf16, 1 for fp16) is exercised as well
    for dname, codes in [(d, c) for d in dtypes for c in ((88, 127), (72, 119))]:
        dtype = getattr(torch, DTYPES[dname])
        dname = f"{dname}, scale codes {codes}"

        def prep():
            w = gen_nvfp4_weights(torch, tiny, seed=1, device="cpu", scale_codes=codes)
            return w, MarlinNVFP4(torch, rp, vs, fns, fp4_id, tiny, w, dtype, "vllm", device="cpu",
                                  with_workspace=False)
        r = check(f"prepare tiny NVFP4 layer on CPU ({dname})", prep)
        if r is None:
            continue
        w, impl = r
        log(f"[dry-run]   {impl.notes}")
        check(f"kernel-facing shapes/dtypes ({dname})", lambda: _check_shapes(torch, impl, tiny))
        check(f"scale bytes decode back to s x g through vLLM's permutations ({dname})",
              lambda: _check_scales(torch, vs, impl, w, tiny))
        check("repack == vLLM marlin_weights() reference packer (expert 1, both matrices)",
              lambda: _check_repack(torch, rp, vs, impl, w, tiny))
        impl.workspace = torch.zeros(8, dtype=torch.int32)
        log("[dry-run]   calls at T=4:\n    " + "\n    ".join(impl.calls(4)))
    check("fp32 NVFP4 reference on CPU vs an element-wise decode", lambda: _check_reference(torch, rp, tiny))
    check("markdown/json writer", lambda: _check_writer(args, shapes, tokens, dtypes))
    log(f"[dry-run] {'ALL OK' if ok else 'SOME CHECKS FAILED'} (no CUDA: the kernel itself is not run)")
    return 0 if ok else 1


def _check_shapes(torch, impl, shp):
    E, Hp, Ip = shp["E"], impl.Hp, impl.Ip
    want = {"w1": ((E, Hp // 16, 2 * 2 * Ip), torch.int32), "w2": ((E, Ip // 16, 2 * Hp), torch.int32),
            "s1": ((E, Hp // GROUP, 2 * Ip), torch.float8_e4m3fn), "s2": ((E, Ip // GROUP, Hp), torch.float8_e4m3fn),
            "g1": ((E,), torch.float32), "g2": ((E,), torch.float32)}
    for k, (shape, dt) in want.items():
        t = getattr(impl, k)
        assert tuple(t.shape) == shape and t.dtype == dt and t.is_contiguous(), (k, t.shape, t.dtype, shape, dt)
    return "w int32 [E,K/16,2N], s e4m3 [E,K/16,N], g fp32 [E]"


def _check_scales(torch, vs, impl, w, shp):
    """Inverts nvfp4_marlin_process_scales + marlin_permute_scales and checks s x g is preserved.

    The kernel-side byte b is the high byte of (fp16(s * factor * 2^7) bits << 1), so fp16 bits = b << 7.
    Effective scale the kernel applies = fp16(b << 7) x (processed global) / 2^(bias - 7) where
    bias = 126 (bf16) or 14 (fp16): must equal s x g exactly (all steps are powers of two or exact).
    """
    E, H, I = shp["E"], shp["H"], shp["I"]
    Hp, Ip = impl.Hp, impl.Ip
    bias = 126 if impl.dtype == torch.bfloat16 else 14
    sp, _ = vs.get_scale_perms()
    inv = torch.argsort(torch.tensor(sp))
    for sub, s_proc, g_proc, s_orig, g_orig, size_k, size_n in (
            ("w13", impl.s1, impl.g1, w["s13"], w["g13"], Hp, 2 * Ip),
            ("w2", impl.s2, impl.g2, w["s2"], w["g2"], Ip, Hp)):
        for e in range(E):
            b = s_proc[e].view(torch.uint8).to(torch.int16)                 # [K/16, N]
            v = (b << 7).view(torch.float16).float()                        # s * factor * 2^7, marlin order
            v = v.reshape(-1, 4)[:, [0, 2, 1, 3]].reshape(size_k // GROUP, size_n)   # undo the fp8 interleave
            v = v.reshape(-1, len(sp))[:, inv].reshape(size_k // GROUP, size_n)      # undo scale_perm
            eff = v * (g_proc[e] / 2.0 ** (bias - 7)) / 2 ** 7              # [K/16, N] = s^T * g
            # expected: original, padded with zeros, transposed
            if sub == "w13":
                exp = torch.zeros(2, Ip, Hp // GROUP)
                so = s_orig[e].float().view(2, I, H // GROUP)
                exp[:, :I, :H // GROUP] = so
                exp = exp.reshape(2 * Ip, -1)
            else:
                exp = torch.zeros(Hp, Ip // GROUP)
                exp[:H, :I // GROUP] = s_orig[e].float()
            exp = exp.t() * g_orig[e]
            if not torch.allclose(eff, exp, rtol=1e-6, atol=0):
                d = (eff - exp).abs().max()
                raise AssertionError(f"{sub} expert {e}: decoded scales differ (max abs diff {d})")
    return f"exact for all experts (factor w13 {impl.notes['scale_factor_w13']}, w2 {impl.notes['scale_factor_w2']})"


def _check_repack(torch, rp, vs, impl, w, shp):
    H, I = shp["H"], shp["I"]
    Hp, Ip = impl.Hp, impl.Ip
    perm = vs.get_weight_perm(4)
    e = 1
    # w13 expert e, padded as MarlinNVFP4 does, as q_w [K, N] of nibbles
    t = w["w13"][e].view(2, I, H // 2)
    t = torch.nn.functional.pad(t, (0, Hp // 2 - H // 2, 0, Ip - I)).reshape(2 * Ip, -1)
    q = torch.stack([t & 0xF, t >> 4], -1).reshape(2 * Ip, Hp).t().contiguous().to(torch.int32)
    ref = vs.marlin_weights(q, Hp, 2 * Ip, 4, perm)
    assert torch.equal(ref, impl.w1[e]), "w13 repack differs from marlin_weights()"
    t = torch.nn.functional.pad(w["w2"][e], (0, Ip // 2 - I // 2, 0, Hp - H))
    q = torch.stack([t & 0xF, t >> 4], -1).reshape(Hp, Ip).t().contiguous().to(torch.int32)
    ref = vs.marlin_weights(q, Ip, Hp, 4, perm)
    assert torch.equal(ref, impl.w2[e]), "w2 repack differs from marlin_weights()"
    return "identical"


def _check_reference(torch, rp, shp):
    w = gen_nvfp4_weights(torch, shp, seed=2, device="cpu")
    e = 2
    W = dequant_nvfp4(torch, rp._FP4, w["w13"][e], w["s13"][e], w["g13"][e])
    # element-wise decode of a few entries
    for (n, kk) in [(0, 0), (0, 1), (5, 17), (2 * shp["I"] - 1, shp["H"] - 1)]:
        byte = int(w["w13"][e, n, kk // 2])
        nib = (byte & 0xF) if kk % 2 == 0 else (byte >> 4)
        mag = [0, 0.5, 1, 1.5, 2, 3, 4, 6][nib & 7] * (-1 if nib & 8 else 1)
        want = mag * float(w["s13"][e, n, kk // GROUP].float()) * float(w["g13"][e])
        assert abs(float(W[n, kk]) - want) <= 1e-6 * abs(want) + 1e-30, (n, kk, float(W[n, kk]), want)
    g = torch.Generator().manual_seed(3)
    T = 5
    x = torch.randn(T, shp["H"], generator=g).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(shp["E"], generator=g)[:shp["k"]] for _ in range(T)]).to(torch.int32)
    tw = torch.softmax(torch.randn(T, shp["k"], generator=g), -1)
    out = reference(torch, rp._FP4, shp, w, x, ids, tw)
    # naive dense check of the same math
    o2 = torch.zeros_like(out)
    for t in range(T):
        for j in range(shp["k"]):
            ee = int(ids[t, j])
            W13 = dequant_nvfp4(torch, rp._FP4, w["w13"][ee], w["s13"][ee], w["g13"][ee])
            W2 = dequant_nvfp4(torch, rp._FP4, w["w2"][ee], w["s2"][ee], w["g2"][ee])
            h = W13 @ x[t].float()
            a = torch.nn.functional.silu(h[:shp["I"]]) * h[shp["I"]:]
            o2[t] += tw[t, j] * (W2 @ a)
    rel = float(torch.linalg.norm(out - o2) / torch.linalg.norm(o2))
    assert rel < 1e-5, rel
    return f"rel diff {rel:.1e}, |out| rms {float(out.pow(2).mean().sqrt()):.3g}"


def _check_writer(args, shapes, tokens, dtypes):
    out = os.path.join(args.out, "dry_run")
    a = argparse.Namespace(**dict(vars(args), out=out))
    fake = [dict(kind="row", shape=shapes[0], T=tokens[0], dtype=dtypes[0], pad_h="vllm", padded_H=1,
                 padded_I=1, experts_hit=6.0, block_size_m=8, time_us=1.0, p10_us=1.0, p90_us=1.0,
                 rel_fro_err=1e-3, rel_fro_err_graph=1e-3),
            dict(kind="error", task="x", shape=shapes[0], dtype="fp16", T=1, stage="row", error="example")]
    res, md = summarize(a, dict(shapes=shapes), fake, [dict(task="x", status="ok", wall_s=0)], time.time(), None)
    return f"{out}/{TAG}.md ({len(md)} chars; fake row, not a measurement)"


def main():
    args = parse_args()
    if args.child:
        sys.exit(child_main(json.loads(args.child)))
    if args.dry_run:
        sys.exit(dry_run(args))
    sys.exit(main_parent(args))


if __name__ == "__main__":
    main()
