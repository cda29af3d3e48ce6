"""Partial-FC head vs a dense softmax as the concept bank grows, and k-means throughput.

Heads (one process, one rank; forward + backward of the loss w.r.t. embeddings and centres, best of
``--repeats``): ``dense`` = a full-bank CosFace cross-entropy on one label (what a data-parallel FC
computes), ``pfc@1.0`` = :class:`encoder.pretrain.PartialFC` over the whole bank with k labels per sample,
``pfc@0.1`` = the same scoring 10% of the centres. Peak memory is the resident-set high-water mark
of a fresh subprocess per setting, minus that process's baseline after building the inputs (CPU).

k-means: points/s of the training iterations and of the top-k assignment, torch and faiss.

    python benchmarks/bench_partial_fc.py                       # 10k, 100k, 1M centres, dim 64, batch 256
    python benchmarks/bench_partial_fc.py --centres 10000 100000 --kmeans-points 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def peak_rss_mb() -> float:
    """This process's resident high-water mark in MB (the trainer's own CPU peak-memory reading)."""
    import torch

    from llava_ov.train.distributed import peak_memory_gb

    return peak_memory_gb(torch.device("cpu")) * 1024


def one(kind: str, centres: int, dim: int, batch: int, labels: int, k: int, repeats: int) -> dict:
    from encoder.pretrain import PartialFC

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(batch, dim, generator=g, requires_grad=True)
    stored = torch.randint(0, centres, (batch, labels), generator=g)
    if kind == "dense":
        weight = torch.nn.Parameter(torch.randn(centres, dim, generator=g) * 0.01)
    else:
        head = PartialFC(
            centres, dim, sample_rate=float(kind.split("@")[1]), num_labels=k, rank=0, world_size=1
        )
    base = peak_rss_mb()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        if kind == "dense":
            cos = F.normalize(emb, dim=1) @ F.normalize(weight, dim=1).t()
            target = stored[:, 0]
            logits = 64.0 * (cos - 0.3 * F.one_hot(target, centres))
            loss = F.cross_entropy(logits, target)
        else:
            loss = head(emb, stored, g).loss
        loss.backward()
        times.append(time.perf_counter() - t)
        emb.grad = None
    return {"kind": kind, "centres": centres, "seconds": min(times), "peak_mb": peak_rss_mb() - base}


def kmeans_bench(points: int, dim: int, centres: int, iters: int) -> list[dict]:
    from encoder.pretrain.kmeans import KMeansConfig, TopK, faiss_available, train_faiss, train_torch

    x = np.random.default_rng(0).normal(size=(points, dim)).astype(np.float32)
    out = []
    for backend in ["torch"] + (["faiss"] if faiss_available() else []):
        cfg = KMeansConfig(num_centres=centres, iters=iters, backend=backend, plus_plus_up_to=0)
        t = time.perf_counter()
        res = (train_faiss if backend == "faiss" else train_torch)(x, cfg)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        TopK(res.centres, 10, backend=backend)(x)
        assign_s = time.perf_counter() - t
        out.append(
            {
                "backend": backend,
                "points": points,
                "centres": centres,
                "iters": iters,
                "train_points_per_s": points * iters / train_s,
                "assign_points_per_s": points / assign_s,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--centres", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--labels", type=int, default=10, help="stored labels per sample")
    ap.add_argument("--k", type=int, default=8, help="labels drawn per sample and step (partial FC)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kmeans-points", type=int, default=100_000)
    ap.add_argument("--kmeans-centres", type=int, default=1024)
    ap.add_argument("--kmeans-iters", type=int, default=10)
    ap.add_argument("--one", nargs=2, metavar=("KIND", "CENTRES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.one:
        print(
            json.dumps(
                one(args.one[0], int(args.one[1]), args.dim, args.batch, args.labels, args.k, args.repeats)
            )
        )
        return 0
    rows = []
    for c in args.centres:
        for kind in ("dense", "pfc@1.0", "pfc@0.1"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                kind,
                str(c),
                "--dim",
                str(args.dim),
                "--batch",
                str(args.batch),
                "--labels",
                str(args.labels),
                "--k",
                str(args.k),
                "--repeats",
                str(args.repeats),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-1000:], file=sys.stderr)
                return 1
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"heads: batch {args.batch}, dim {args.dim}, {args.labels} stored labels, k={args.k} (partial FC)")
    print("| centres | head | step (fwd+bwd) s | vs dense | peak MB |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        dense = next(d for d in rows if d["centres"] == r["centres"] and d["kind"] == "dense")
        print(
            f"| {r['centres']:,} | {r['kind']} | {r['seconds']:.4f} | "
            f"{r['seconds'] / dense['seconds']:.2f}x | {r['peak_mb']:.0f} |"
        )
    km = kmeans_bench(args.kmeans_points, args.dim, args.kmeans_centres, args.kmeans_iters)
    print(
        f"\nk-means: {args.kmeans_points:,} points, dim {args.dim}, "
        f"{args.kmeans_centres} centres, {args.kmeans_iters} iterations"
    )
    print("| backend | train points/s (x iters) | top-10 assignment points/s |\n| --- | --- | --- |")
    for r in km:
        print(f"| {r['backend']} | {r['train_points_per_s']:,.0f} | {r['assign_points_per_s']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
