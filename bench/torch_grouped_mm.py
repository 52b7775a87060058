#!/usr/bin/env python3
"""bf16 MoE baseline through torch._grouped_mm, timed like `mxmoe bench` times mxmoe.

Reads the routing the C++ bench used (routing-<model>.json: shape, seed and per row the top-k
expert ids), builds bf16 weights of the same shapes from torch's own generator (random: the time
depends only on the shapes and the routing, not on the weight values), and per row times the whole
routed-experts forward: sort the (token, expert) pairs by expert, gather, grouped GEMM gate/up,
activation, grouped GEMM down, weighted scatter-add into the output. Each row is captured in a
CUDA graph, replayed --warmup times, then --reps times with --flush-mb MiB written before every
timed replay (outside the events); the median is written to --out as
{"meta": {...}, "rows": [{"tokens": T, "us": median} or {"tokens": T, "error": why}]}.
"""
import argparse
import json
import statistics
import sys

import torch


def activation(g, u, kind, limit, alpha=1.702):
    if kind == "silu":
        return torch.nn.functional.silu(g) * u
    g = g.clamp(max=limit)
    u = u.clamp(-limit, limit)
    if kind == "clamped-silu":
        return torch.nn.functional.silu(g) * u
    return (u + 1) * g * torch.sigmoid(alpha * g)


def make_forward(w13, w2, b13, b2, top_k, kind, limit):
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    w13t, w2t = w13.transpose(1, 2), w2.transpose(1, 2)  # [E, K, N] views, column-major per expert

    def forward(x, ids, weights, out):
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(num_experts, dtype=torch.int32, device=x.device)
        counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))  # bincount would sync
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        expert = flat[order]
        token = order // top_k
        h = torch._grouped_mm(x.index_select(0, token), w13t, offs=offs)
        if b13 is not None:
            h = h + b13.index_select(0, expert)
        a = activation(h[:, :inter].float(), h[:, inter:].float(), kind, limit).to(torch.bfloat16)
        y = torch._grouped_mm(a, w2t, offs=offs)
        if b2 is not None:
            y = y + b2.index_select(0, expert)
        y = y.float() * weights.reshape(-1)[order].unsqueeze(1)
        acc = torch.zeros(x.shape[0], hidden, dtype=torch.float32, device=x.device)
        acc.index_add_(0, token, y)
        out.copy_(acc)  # the combined output in bf16, like mxmoe's
        return out

    return forward


def time_graph(fn, reps, warmup, flush):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # torch wants eager warm-up runs off the capture stream
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(warmup):
        graph.replay()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush is not None:
            flush.fill_(i & 0xFF)
        starts[i].record()
        graph.replay()
        stops[i].record()
    torch.cuda.synchronize()
    del graph
    return statistics.median(1000.0 * s.elapsed_time(e) for s, e in zip(starts, stops))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routing", required=True, help="routing-<model>.json written by mxmoe bench")
    p.add_argument("--out", required=True, help="where to write the timings (JSON)")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--flush-mb", type=int, default=256)
    p.add_argument("--activation", choices=["silu", "clamped-silu", "gpt-oss"], default="silu")
    p.add_argument("--limit", type=float, default=10.0, help="clamp limit of clamped-silu / gpt-oss")
    p.add_argument("--biases", action="store_true", help="add expert biases (gpt-oss)")
    args = p.parse_args()

    with open(args.routing) as f:
        doc = json.load(f)
    shape = doc["shape"]
    H, I, E, k = shape["hidden"], shape["inter"], shape["experts"], shape["top_k"]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(doc.get("seed", 1)))
    print(f"torch_grouped_mm: {shape['name']} H={H} I={I} E={E} k={k}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}", file=sys.stderr)
    w13 = torch.randn(E, 2 * I, H, device=dev, dtype=torch.bfloat16, generator=gen).mul_(0.02)
    w2 = torch.randn(E, H, I, device=dev, dtype=torch.bfloat16, generator=gen).mul_(0.02)
    b13 = b2 = None
    if args.biases:
        b13 = torch.randn(E, 2 * I, device=dev, dtype=torch.bfloat16, generator=gen).mul_(0.05)
        b2 = torch.randn(E, H, device=dev, dtype=torch.bfloat16, generator=gen).mul_(0.05)
    forward = make_forward(w13, w2, b13, b2, k, args.activation, args.limit)
    flush = torch.empty(args.flush_mb << 20, dtype=torch.uint8, device=dev) if args.flush_mb > 0 else None

    rows = []
    max_t = max(r["tokens"] for r in doc["rows"])
    x_all = torch.randn(max_t, H, device=dev, dtype=torch.bfloat16, generator=gen)
    for n, r in enumerate(doc["rows"]):
        T = r["tokens"]
        try:
            ids = torch.tensor(r["ids"], dtype=torch.int64, device=dev).reshape(T, k)
            if bool((ids < 0).any()) or bool((ids >= E).any()):
                raise ValueError("ids outside 0..E-1 (the torch baseline does not skip -1)")
            weights = torch.softmax(torch.randn(T, k, device=dev, generator=gen), dim=1)
            x = x_all[:T]
            out = torch.empty(T, H, device=dev, dtype=torch.bfloat16)
            us = time_graph(lambda: forward(x, ids, weights, out), args.reps, args.warmup, flush)
            rows.append({"tokens": T, "us": us})
            print(f"torch_grouped_mm: [{n + 1}/{len(doc['rows'])}] T={T}: {us:.1f} us", file=sys.stderr)
        except (RuntimeError, ValueError) as e:  # out of memory, unsupported shape: say so, go on
            rows.append({"tokens": T, "error": f"torch: {str(e).splitlines()[0]}"})
            print(f"torch_grouped_mm: T={T} failed: {e}", file=sys.stderr)
        torch.cuda.empty_cache()

    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(),
            "weights": "random bf16 of the same shapes (time depends on shapes and routing only)"}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
