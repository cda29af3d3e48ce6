"""Re-encode a folder of videos to the canonical form for codec patchification.

    python scripts/transcode.py SRC_DIR DST_DIR --codec h264 --gop 16 [--crf 23] [--max-side 448]

H.264 or HEVC, fixed GOP, no B-frames, one reference, yuv420p, rotation baked in, video only. The
folder structure is kept; outputs are .mp4. Files already transcoded are skipped (unless --overwrite).
Failures go on, are printed one line each, and are listed in DST_DIR/failures.txt; exit code 1 then.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from encoder.cli import run_cli
from encoder.codec.errors import VideoDecodeError
from encoder.codec.pipeline import media_files
from encoder.codec.transcode import TranscodeConfig, transcode


def find_videos(src: Path) -> list[Path]:
    return media_files(src, images=False)


def _job(job: tuple[Path, Path, TranscodeConfig]) -> tuple[Path, str | None, float]:
    src, dst, cfg = job
    try:
        res = transcode(src, dst, cfg)
        return src, None, res.bytes_out / max(res.bytes_in, 1)
    except (VideoDecodeError, ValueError) as e:
        return src, str(e) if isinstance(e, VideoDecodeError) else f"{src}: {e}", 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a video file or a folder (searched recursively)")
    ap.add_argument("dst", type=Path, help="output folder")
    ap.add_argument("--codec", choices=["h264", "hevc"], default="h264")
    ap.add_argument("--gop", type=int, default=16)
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--max-side", type=int, default=None, help="downscale the longer side to this")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (>= 1)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    cfg = TranscodeConfig(
        codec=args.codec, gop=args.gop, crf=args.crf, preset=args.preset, max_side=args.max_side
    )
    try:
        cfg.validate()
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    videos = find_videos(args.src)
    if not videos:
        print(f"error: no videos found under {args.src}", file=sys.stderr)
        return 2
    base = args.src if args.src.is_dir() else args.src.parent
    jobs = []
    for v in videos:
        dst = (args.dst / v.relative_to(base)).with_suffix(".mp4")
        if args.overwrite or not dst.exists():
            jobs.append((v, dst, cfg))
    failures: list[str] = []
    with tqdm(total=len(jobs), unit="video", file=sys.stderr) as bar:
        pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
        results = pool.map(_job, jobs) if pool else map(_job, jobs)
        for src, err, ratio in results:
            if err:
                failures.append(err)
                tqdm.write(err, file=sys.stderr)
            else:
                bar.set_postfix_str(f"{src.name} size x{ratio:.2f}")
            bar.update(1)
        if pool:
            pool.shutdown()
    print(
        f"transcoded {len(jobs) - len(failures)}/{len(jobs)} ({len(videos) - len(jobs)} already done)",
        file=sys.stderr,
    )
    if failures:
        args.dst.mkdir(parents=True, exist_ok=True)
        (args.dst / "failures.txt").write_text("\n".join(failures) + "\n")
        print(f"{len(failures)} failed; list in {args.dst / 'failures.txt'}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
