"""Patchify cost against video length: the same content at 1, 10 and 60 minutes (360p portrait, 720p).

A 1-minute base clip (handheld camera + mover, 30 fps, x264 ``veryfast`` with its default GOP: keyint
250, B-frames, scene cut) is generated once, and the longer videos repeat its packets with shifted
timestamps (a stream copy: the decoder does exactly the work a real video of that length asks for).
Each setting runs in a fresh subprocess: wall time (best of ``--repeats``) and peak resident memory.
Codec mode (64 frames at 224², 2,048 patches) and frames mode (8 frames); decoding every frame up to the
last sample (``seek=False``, the old path; up to 10 minutes only), seeking to the keyframe before each
sample (``seek``, same result), and keyframe-aligned sampling (``sampling=auto``).

    python benchmarks/bench_long_video.py                       # 360p and 720p, 1 / 10 / 60 minutes
    python benchmarks/bench_long_video.py --minutes 1 10 --sizes 360x640
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """This process's resident high-water mark in MB (the trainer's own CPU peak-memory reading)."""
    import torch

    from llava_ov.train.distributed import peak_memory_gb

    return peak_memory_gb(torch.device("cpu")) * 1024


def make_base(path: Path, width: int, height: int, seconds: int = 60, fps: int = 30) -> None:
    import av

    from encoder.codec.synthetic import render_scene

    n = seconds * fps
    chunk = 300
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast"}
        for start in range(0, n, chunk):
            frames, *_ = render_scene("handheld", width, height, min(chunk, n - start), seed=start)
            for img in frames:
                c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))


def repeat(base: Path, out: Path, times: int) -> None:
    """``times`` copies of ``base``'s video packets back to back (timestamps shifted), stream copy."""
    import av

    with av.open(str(base)) as src:
        ins = src.streams.video[0]
        packets = [p for p in src.demux(ins) if p.dts is not None]
        span = (
            max(p.pts for p in packets)
            - min(p.pts for p in packets)
            + int(1 / (ins.average_rate * ins.time_base))
        )
        with av.open(str(out), "w") as dst:
            ost = dst.add_stream_from_template(ins)
            for k in range(times):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts, q.dts, q.time_base = p.pts + k * span, p.dts + k * span, p.time_base
                    q.is_keyframe = p.is_keyframe
                    q.stream = ost
                    dst.mux(q)


SETTINGS = (
    ("decode all", False, "uniform"),
    ("seek", True, "uniform"),
    ("seek + keyframe sampling", True, "auto"),
)


def measure(path: str, mode: str, setting: int, repeats: int) -> dict:
    from encoder.codec import CodecConfig, DecodeConfig, SelectConfig, patchify

    _, seek, sampling = SETTINGS[setting]
    dec = {"seek": seek, "sampling": sampling, "input_size": 224}
    if mode == "codec":
        cfg = CodecConfig(decode=DecodeConfig(num_frames=64, **dec), select=SelectConfig(budget=2048))
    else:
        cfg = CodecConfig(mode="frames", num_frames=8, decode=DecodeConfig(**dec))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sel = patchify(path, cfg)
        times.append(time.perf_counter() - t)
    return {"seconds": min(times), "patches": len(sel), "peak_mb": peak_rss_mb()}


def index_seconds(path: Path, repeats: int = 3) -> tuple[float, float]:
    """Best time to build the frame index from the MP4 sample tables and by a demux pass."""
    from encoder.codec.decode import _build_index, _open

    out = []
    for tables in (True, False):
        best = float("inf")
        for _ in range(repeats):
            c, s = _open(str(path))
            t = time.perf_counter()
            _build_index(str(path), c, s, index_tables=tables)
            best = min(best, time.perf_counter() - t)
            c.close()
        out.append(best)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60])
    ap.add_argument("--sizes", nargs="+", default=["360x640", "1280x720"], help="WxH")
    ap.add_argument("--dir", type=Path, default=Path(".cache/bench_long_video"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--index-only", action="store_true", help="only the frame-index table")
    ap.add_argument("--one", nargs=3, metavar=("PATH", "MODE", "SETTING"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], int(args.one[2]), args.repeats)))
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    rows, index_rows = [], []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        base = args.dir / f"base_{w}x{h}.mp4"
        if not base.exists():
            t = time.perf_counter()
            make_base(base, w, h)
            print(f"generated {base} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for minutes in args.minutes:
            path = base if minutes == 1 else args.dir / f"long_{w}x{h}_{minutes}min.mp4"
            if not path.exists():
                repeat(base, path, minutes)
            index_rows.append((size, minutes, round(path.stat().st_size / 1e6), *index_seconds(path)))
            if args.index_only:
                continue
            for mode in ("codec", "frames"):
                for k, (name, seek, _) in enumerate(SETTINGS):
                    if not seek and minutes > 10:
                        continue  # decoding every frame of an hour: minutes per call
                    cmd = [
                        sys.executable,
                        __file__,
                        "--one",
                        str(path),
                        mode,
                        str(k),
                        "--repeats",
                        str(args.repeats),
                    ]
                    res = subprocess.run(cmd, capture_output=True, text=True)
                    if res.returncode != 0:
                        print(res.stderr[-2000:], file=sys.stderr)
                        return 1
                    r = json.loads(res.stdout.strip().splitlines()[-1])
                    rows.append(
                        {
                            "size": size,
                            "minutes": minutes,
                            "mode": mode,
                            "setting": name,
                            "mb": round(path.stat().st_size / 1e6),
                            **r,
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        "| size | minutes | file MB | index from the MP4 tables s | demux pass s |\n"
        "| --- | --- | --- | --- | --- |"
    )
    for size, minutes, mb, t_tables, t_demux in index_rows:
        print(f"| {size} | {minutes} | {mb} | {t_tables:.3f} | {t_demux:.3f} |")
    if args.index_only:
        return 0
    print(
        "| size | minutes | file MB | mode | decoding | seconds | vs 1 min | peak MB |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in rows:
        one = next(
            x
            for x in rows
            if x["size"] == r["size"]
            and x["mode"] == r["mode"]
            and x["setting"] == r["setting"]
            and x["minutes"] == min(args.minutes)
        )
        print(
            f"| {r['size']} | {r['minutes']} | {r['mb']} | {r['mode']} | {r['setting']} | "
            f"{r['seconds']:.2f} | {r['seconds'] / one['seconds']:.2f}× | {r['peak_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
