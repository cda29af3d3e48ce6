"""Codec patchification cost vs plain decoding, measured side by side in one run.

For each source clip (H.264 and HEVC) and input size (224, 448): the time to decode the T sampled
frames (``motion="none"``), the time of the full patchify (decode + motion + residual + saliency +
selection), and their ratio. H.264 runs the bitstream path (motion vectors from the decoder) and the
estimated path (block matching); HEVC exports no motion vectors, so it runs the estimated path.

    python benchmarks/bench_codec.py                      # synthetic 640x360, 300-frame sources
    python benchmarks/bench_codec.py --video a.mp4 --video b.mp4 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from encoder.codec import CodecConfig, DecodeConfig, patchify
from encoder.codec.decode import decode_clip
from encoder.codec.synthetic import make_clip


def timed_pair(base, full, repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` calls of each, interleaved (base, full, base, ...) after a warm-up,
    so both see the same machine load; the minimum is the least disturbed run."""
    base(), full()
    tb, tf = [], []
    for _ in range(repeats):
        for fn, out in ((base, tb), (full, tf)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return min(tb), min(tf)


def sources(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    if args.video:
        return [(Path(v).name, Path(v)) for v in args.video]
    out = []
    for codec in ("h264", "hevc"):
        clip = make_clip(tmp / f"src_{codec}.mp4", "pan_mover", codec=codec, width=args.width,
                         height=args.height, num_frames=args.source_frames, gop=args.gop, seed=0)
        out.append((codec, Path(clip.path)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", action="append", help="real video files (default: synthetic clips)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--frames", type=int, default=64, help="sampled frames T")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--source-frames", type=int, default=300)
    ap.add_argument("--gop", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, T={args.frames}, best of {args.repeats} interleaved runs")
    header = f"{'source':<14}{'size':>6}{'motion':>11}{'decode s':>10}{'patchify s':>12}{'ratio':>8}{'kept':>7}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in sources(args, Path(tmp)):
            for size in args.sizes:
                dcfg = DecodeConfig(num_frames=args.frames, input_size=size)
                decode_only = dataclasses.replace(dcfg, motion="none")
                for motion in ("bitstream", "estimated"):
                    cfg = CodecConfig(decode=dataclasses.replace(dcfg, motion=motion))
                    cfg.select = dataclasses.replace(cfg.select, budget=0.125)
                    try:
                        kept = len(patchify(path, cfg))
                    except ValueError as e:  # e.g. bitstream motion on HEVC
                        print(f"{name:<14}{size:>6}{motion:>11}{'':>10}{'n/a':>12}  ({str(e)[:60]})")
                        continue
                    t_dec, t_full = timed_pair(
                        lambda p=path, d=decode_only: decode_clip(p, d), lambda c=cfg, p=path: patchify(p, c), args.repeats
                    )
                    print(f"{name:<14}{size:>6}{motion:>11}{t_dec:>10.3f}{t_full:>12.3f}{t_full / t_dec:>8.2f}{kept:>7}")


if __name__ == "__main__":
    main()
