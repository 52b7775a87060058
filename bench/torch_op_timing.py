"""Times mxmoe.torch.fused_moe (the torch op) by the method of `mxmoe bench`: the op captured in a
CUDA graph, a 256 MiB L2 flush before each timed replay (outside the events), median of `reps`.
Run beside `mxmoe bench --preset P --tokens ... --out-dir D` in the same device call and pass
--routing D/routing-P.json: the op is then timed on the very routing the bench timed, and the two
should agree within noise (the Python layer adds no kernels). Without --routing: uniform random top-k.
Prints one JSON line per (preset, T)."""
import argparse
import json
import statistics

import torch

from mxmoe import torch as mt

PRESETS = {"dsv4-flash": (256, 4096, 2048, 6), "gpt-oss-120b": (128, 2880, 2880, 4)}


def random_prepared(E, H, I, device="cuda"):
    g = torch.Generator(device=device).manual_seed(1)

    def bytes_(*shape):
        return torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=g)

    def scales(*shape):
        return torch.randint(118, 123, shape, dtype=torch.uint8, device=device, generator=g)

    return mt.prepare(bytes_(E, 2 * I, H // 2), scales(E, 2 * I, H // 32), bytes_(E, H, I // 2), scales(E, H, I // 32),
                      inplace=True)


def time_op(fn, reps, warmup, flush_bytes=256 << 20):
    flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            graph.replay()
        for i in range(reps):
            flush.fill_(i & 0xFF)
            starts[i].record()
            graph.replay()
            stops[i].record()
    torch.cuda.synchronize()
    return statistics.median(1000.0 * a.elapsed_time(b) for a, b in zip(starts, stops))


def eager_us_per_call(fn, calls=200):
    """Wall time per call of back-to-back eager calls (no flush): the host cost of the Python layer
    and the launches, when it exceeds the GPU time."""
    import time
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e6 / calls


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), action="append")
    p.add_argument("--routing", action="append", default=[],
                   help="routing-<model>.json written by mxmoe bench --out-dir (its shape and rows are used)")
    p.add_argument("--tokens", default="1,64,4096")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()
    jobs = []  # (preset, E, H, I, k, [(T, ids or None)])
    for path in args.routing:
        with open(path) as f:
            doc = json.load(f)
        s = doc["shape"]
        jobs.append((s["name"], s["experts"], s["hidden"], s["inter"], s["top_k"],
                     [(r["tokens"], r["ids"]) for r in doc["rows"]]))
    if not jobs:
        for preset in args.preset or sorted(PRESETS):
            jobs.append((preset, *PRESETS[preset], [(int(t), None) for t in args.tokens.split(",")]))
    for preset, E, H, I, k, rows in jobs:
        prepared = random_prepared(E, H, I)
        for T, given_ids in rows:
            g = torch.Generator(device="cuda").manual_seed(T)
            hidden = torch.randn(T, H, device="cuda", generator=g).to(torch.bfloat16)
            if given_ids is None:
                ids = torch.rand(T, E, device="cuda", generator=g).topk(k, dim=1).indices.to(torch.int32)
            else:
                ids = torch.tensor(given_ids, dtype=torch.int32, device="cuda").reshape(T, k)
            weights = torch.softmax(torch.randn(T, k, device="cuda", generator=g), dim=1)
            out = torch.empty_like(hidden)
            op = lambda: mt.fused_moe(hidden, prepared, weights, ids, out=out)  # noqa: E731
            us = time_op(op, args.reps, args.warmup)
            print(json.dumps({"preset": preset, "tokens": T, "routing": "bench" if given_ids is not None else "uniform",
                              "torch_op_us": round(us, 2), "eager_us_per_call": round(eager_us_per_call(op), 2)}),
                  flush=True)


if __name__ == "__main__":
    main()
