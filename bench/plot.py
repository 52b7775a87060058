#!/usr/bin/env python3
"""Plots of `mxmoe bench` results: reads <model>.json, writes <model>-time.png,
<model>-efficiency.png and <model>-tflops.png (one line per path, the read floor as a line; with
--peers, the peers of PEERS.md as thin dotted lines).

  python3 bench/plot.py bench-out/dsv4-flash.json [more.json ...] [--peers bench/peers-h100.json]
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"mxmoe": dict(color="tab:red", marker="o", lw=2.2, label="mxmoe"),
         "cublas_bf16": dict(color="tab:blue", marker="s", lw=1.5, label="cuBLAS bf16 (dequantised once)"),
         "torch_bf16": dict(color="tab:green", marker="^", lw=1.5, label="torch._grouped_mm bf16")}
PEER_MARKERS = ["x", "+", "1", "d", "v"]


def series(rows, path, key):
    xs, ys = [], []
    for r in rows:
        p = r.get("paths", {}).get(path)
        if p is not None and key in p:
            xs.append(r["tokens"])
            ys.append(p[key])
    return xs, ys


def peer_series(peer_paths, peer_floor, rows, figure):
    """(name, xs, ys) per peer for 'us', 'streaming_efficiency' (the peers' own read floor where
    PEERS.md gives one, else ours) or 'tflop_per_s' (our FLOP count: it depends on T, k, H, I only)."""
    by_t = {r["tokens"]: r for r in rows}
    out = []
    for name, times in peer_paths.items():
        xs, ys = [], []
        for t_str, us in sorted(times.items(), key=lambda kv: int(kv[0])):
            t = int(t_str)
            row = by_t.get(t)
            if figure == "us":
                xs.append(t); ys.append(us)
            elif row is None:
                continue
            elif figure == "streaming_efficiency" and (t_str in peer_floor or "read_floor_us" in row):
                xs.append(t); ys.append(peer_floor.get(t_str, row.get("read_floor_us")) / us)
            elif figure == "tflop_per_s":
                xs.append(t); ys.append(row["flops"] / (us * 1e-6) / 1e12)
        out.append((name, xs, ys))
    return out


def draw_peers(ax, peers, rows, figure):
    for i, (name, xs, ys) in enumerate(peer_series(peers.get("paths", {}), peers.get("read_floor_us", {}), rows, figure)):
        if xs:
            ax.plot(xs, ys, ls=":", lw=1, color="0.45", marker=PEER_MARKERS[i % len(PEER_MARKERS)],
                    label=f"peer: {name} (PEERS.md)")


def finish(ax, fig, title, ylabel, path):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot.py: wrote {path}", file=sys.stderr)


def plot(result_path, peers_doc, out_dir):
    with open(result_path) as f:
        res = json.load(f)
    rows = res["rows"]
    shape = res["shape"]
    name = shape["name"]
    peers = (peers_doc or {}).get("models", {}).get(name, {})
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(result_path))[0])
    where = f"\n{name} (H={shape['hidden']} I={shape['inter']} E={shape['experts']} top-{shape['top_k']}), " \
            f"{res['meta'].get('device', '?').split(',')[0]}, commit {res['meta'].get('commit', '?')}"

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in res.get("paths", STYLE):
        xs, ys = series(rows, path, "us")
        if xs:
            ax.plot(xs, ys, **STYLE.get(path, dict(label=path)))
    fx = [r["tokens"] for r in rows if "read_floor_us" in r]
    fy = [r["read_floor_us"] for r in rows if "read_floor_us" in r]
    ax.plot(fx, fy, ls="--", color="black", lw=1.5, label="read floor (stream the row's bytes)")
    draw_peers(ax, peers, rows, "us")
    ax.set_yscale("log")
    finish(ax, fig, "time per forward: " + where, "time (us, median)", stem + "-time.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in res.get("paths", STYLE):
        xs, ys = series(rows, path, "streaming_efficiency")
        if xs:
            ax.plot(xs, ys, **STYLE.get(path, dict(label=path)))
    ax.axhline(1.0, ls="--", color="black", lw=1.5, label="read floor")
    draw_peers(ax, peers, rows, "streaming_efficiency")
    ax.set_ylim(0, 1.1)
    finish(ax, fig, "streaming efficiency (read floor / time): " + where, "efficiency", stem + "-efficiency.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in res.get("paths", STYLE):
        xs, ys = series(rows, path, "tflop_per_s")
        if xs:
            ax.plot(xs, ys, **STYLE.get(path, dict(label=path)))
    fx = [r["tokens"] for r in rows if "read_floor_us" in r]
    fy = [r["flops"] / (r["read_floor_us"] * 1e-6) / 1e12 for r in rows if "read_floor_us" in r]
    ax.plot(fx, fy, ls="--", color="black", lw=1.5, label="read floor (FLOPs / floor time)")
    gemm = res.get("limits", {}).get("gemm_tflop_per_s", 0)
    if gemm > 0:
        ax.axhline(gemm, ls="-.", color="0.3", lw=1.2,
                   label=f"cuBLAS bf16 GEMM {res['limits'].get('gemm_n')}^3: {gemm:.0f} TFLOP/s")
    draw_peers(ax, peers, rows, "tflop_per_s")
    ax.set_yscale("log")
    finish(ax, fig, "TFLOP/s (2*pairs*3*H*I / time): " + where, "TFLOP/s", stem + "-tflops.png")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by mxmoe bench")
    p.add_argument("--peers", help="peers' figures (bench/peers-h100.json) to draw beside ours")
    p.add_argument("--out-dir", help="where the PNGs go (default: beside each JSON)")
    args = p.parse_args()
    peers = None
    if args.peers:
        with open(args.peers) as f:
            peers = json.load(f)
    for r in args.results:
        plot(r, peers, args.out_dir or os.path.dirname(os.path.abspath(r)))


if __name__ == "__main__":
    main()
