"""Codec patchification cost vs plain decoding, measured side by side in one run.

For each source clip (H.264 and HEVC) and input size (224, 448): the time to decode the T sampled
frames (``motion="none"``), the time of the full patchify (decode + motion + residual + saliency +
selection), their ratio, and the memory one patchify adds at its peak (resident set in a fresh
process, Linux). H.264 runs the bitstream path (motion vectors from the decoder) and the estimated
path (block matching); HEVC exports no motion vectors, so it runs the estimated path.

Two generated sets: ``convenient`` (the pan-mover scene, 640×360, fixed GOP 16, no B-frames, one
reference: reproducible) and ``realistic`` (a handheld camera — translation, rotation and zoom changing
every frame — plus an independent mover, 30 fps, portrait 360×640 and landscape 1280×720, encoded by
x264 and x265 at their default presets: B-frames, 3+ references, scene cut).

    python benchmarks/bench_codec.py                      # both sets
    python benchmarks/bench_codec.py --set realistic
    python benchmarks/bench_codec.py --video a.mp4 --video b.mp4 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from peak_memory import in_fresh_process, peak_added_mb

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


def _peak_child(path: str, cfg: CodecConfig) -> float | None:
    import av  # noqa: F401  (imported lazily by the decoder: not the clip's memory)

    return peak_added_mb(patchify, path, cfg)


def clip_peak_mb(path: Path, cfg: CodecConfig) -> float | None:
    """Memory one patchify adds at its peak, in MB, measured in a fresh process (this one's allocator
    keeps what earlier runs freed); None where /proc lacks the counters."""
    return in_fresh_process(_peak_child, str(path), cfg)


def realistic(path: Path, codec: str, width: int, height: int, frames: int) -> Path:
    """The handheld scene encoded by libx264 / libx265 with the encoder's own defaults, 30 fps."""
    import av

    from encoder.codec.synthetic import render_scene

    video, *_ = render_scene("handheld", width, height, frames, seed=0)
    with av.open(str(path), "w") as c:
        s = c.add_stream({"h264": "libx264", "hevc": "libx265"}[codec], rate=30)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        if codec == "hevc":
            s.options = {"x265-params": "log-level=error"}
        for img in video:
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    return path


def sources(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, Path]]:
    if args.video:
        return [("files", Path(v).name, Path(v)) for v in args.video]
    out = []
    if args.set in ("both", "convenient"):
        for codec in ("h264", "hevc"):
            clip = make_clip(
                tmp / f"src_{codec}.mp4",
                "pan_mover",
                codec=codec,
                width=args.width,
                height=args.height,
                num_frames=args.source_frames,
                gop=args.gop,
                seed=0,
            )
            out.append(("convenient", codec, Path(clip.path)))
    if args.set in ("both", "realistic"):
        for w, h in ((360, 640), (1280, 720)):
            for codec in ("h264", "hevc"):
                name = f"{codec} {w}x{h}"
                out.append(
                    (
                        "realistic",
                        name,
                        realistic(tmp / f"real_{codec}_{w}x{h}.mp4", codec, w, h, args.source_frames),
                    )
                )
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
    ap.add_argument("--set", choices=["both", "convenient", "realistic"], default="both")
    ap.add_argument(
        "--decode-threads",
        type=int,
        default=0,
        help="FFmpeg decoding threads (0 = its choice; the bitstream path always decodes with 1)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads: {torch.get_num_threads()}, "
        f"decode threads: {args.decode_threads or 'auto'}, T={args.frames}, "
        f"best of {args.repeats} interleaved runs"
    )
    header = (
        f"{'set':<12}{'source':<18}{'size':>6}{'motion':>11}{'decode s':>10}{'patchify s':>12}"
        f"{'ratio':>8}{'kept':>7}{'peak MB':>9}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for group, name, path in sources(args, Path(tmp)):
            for size in args.sizes:
                dcfg = DecodeConfig(num_frames=args.frames, input_size=size, threads=args.decode_threads)
                decode_only = dataclasses.replace(dcfg, motion="none")
                for motion in ("bitstream", "estimated"):
                    cfg = CodecConfig(decode=dataclasses.replace(dcfg, motion=motion))
                    cfg.select = dataclasses.replace(cfg.select, budget=0.125)
                    try:
                        kept = len(patchify(path, cfg))
                    except ValueError as e:  # e.g. bitstream motion on HEVC
                        print(
                            f"{group:<12}{name:<18}{size:>6}{motion:>11}{'':>10}{'n/a':>12}  ({str(e)[:60]})"
                        )
                        continue
                    peak = clip_peak_mb(path, cfg)
                    t_dec, t_full = timed_pair(
                        lambda p=path, d=decode_only: decode_clip(p, d),
                        lambda c=cfg, p=path: patchify(p, c),
                        args.repeats,
                    )
                    print(
                        f"{group:<12}{name:<18}{size:>6}{motion:>11}{t_dec:>10.3f}{t_full:>12.3f}"
                        f"{t_full / t_dec:>8.2f}{kept:>7}"
                        f"{'' if peak is None else f'{peak:.0f}':>9}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
