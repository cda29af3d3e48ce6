"""Codec patchification CLI: videos/images → budgeted patch selections (.npz), optional PNGs.

    python scripts/codec_patchify.py clip.mp4 --budget 2048 --out clip.npz --png
    python scripts/codec_patchify.py videos/*.mp4 --budget 0.125 --out patches/ --workers 2
    python scripts/codec_patchify.py clip.mp4 --out x.npz --set select.mode=buckets saliency.camera=similarity

Inputs may be files or folders (searched recursively for videos and images, as transcode.py does).
Bad files print one line on stderr (a traceback only with --debug); the others go on; the exit code
is 1 when any file failed, and with --out DIR the failures are also written to DIR/failures.txt.
A budget that the dense context frame uses up, or that leaves less than --min-motion-share of it for
motion patches, is a warning with the numbers (an error with --strict); bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from encoder.cli import run_cli
from encoder.codec import CodecConfig, VideoDecodeError, patchify_with_canvas, render_selection
from encoder.codec.pipeline import media_files
from encoder.typed_config import ConfigError, load_config


def parse_budget(text: str) -> int | float:
    """'2048' → 2048; '0.125' or '12.5%' → 0.125."""
    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text) if "." in text or "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"budget must be a count (2048) or a fraction (0.125, 12.5%), got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="video or image files, or folders of them")
    ap.add_argument("--out", required=True, help="FILE.npz for one input, a directory for several")
    ap.add_argument("--budget", type=parse_budget, help="patches to keep: a count, or a fraction of all")
    ap.add_argument("--input-size", type=int, help="square input side (224 default, 448 allowed)")
    ap.add_argument("--mode", choices=["codec", "frames", "collage", "image"], help="input mode")
    ap.add_argument("--frames", type=int, help="sampled frames (codec mode, default 64)")
    ap.add_argument("--png", action="store_true", help="also write a picture of the selection (.png)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (>= 1)")
    ap.add_argument(
        "--min-motion-share",
        type=float,
        default=0.25,
        help="warn when less than this share of the budget is left after the context frame",
    )
    ap.add_argument("--strict", action="store_true", help="that budget warning is an error (exit 2)")
    ap.add_argument("--config", help="YAML file with CodecConfig fields")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return ap


def make_config(args: argparse.Namespace) -> CodecConfig:
    overrides = list(args.set)
    if args.budget is not None:
        overrides.append(f"select.budget={args.budget}")
    if args.input_size is not None:
        overrides.append(f"decode.input_size={args.input_size}")
    if args.mode is not None:
        overrides.append(f"mode={args.mode}")
    if args.frames is not None:
        overrides.append(f"decode.num_frames={args.frames}")
    return load_config(CodecConfig, args.config, overrides)


def motion_share_problem(cfg: CodecConfig, min_share: float) -> tuple[str, bool] | None:
    """Why the budget leaves (almost) nothing for motion after the dense first frame, with the numbers,
    and whether every input would fail (a budget below that frame); codec / random modes with
    ``select.context: first`` only; None when it is fine."""
    if cfg.mode not in ("codec", "random") or cfg.select.context != "first":
        return None
    per_frame = (cfg.decode.input_size // cfg.patch_size) ** 2
    budget = cfg.select.budget
    total = budget if isinstance(budget, int) else round(budget * per_frame * cfg.decode.num_frames)
    motion = total - per_frame
    if motion / max(total, 1) >= min_share:
        return None
    where = (
        f"budget {total} patches, the dense context frame takes {per_frame} "
        f"({cfg.decode.input_size} px / {cfg.patch_size} px patches)"
    )
    if motion <= 0:
        return (
            f"{where}: no patch is left for motion; raise --budget above {per_frame} or lower --input-size",
            motion < 0,
        )
    return (
        f"{where}: only {motion} ({motion / total:.0%}) for motion, below --min-motion-share {min_share:.0%}",
        False,
    )


def output_paths(inputs: list[str], out: str) -> list[Path]:
    """One input + a .npz name → that file; otherwise one ``stem.npz`` per input under the directory."""
    out_path = Path(out)
    if len(inputs) == 1 and out_path.suffix == ".npz":
        return [out_path]
    if out_path.suffix == ".npz":
        raise ValueError(
            f"--out {out} names one .npz file but {len(inputs)} inputs were given; pass a directory"
        )
    seen: dict[str, int] = {}
    paths = []
    for inp in inputs:
        stem = Path(inp).stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        paths.append(out_path / (f"{stem}.npz" if n == 0 else f"{stem}_{n}.npz"))
    return paths


def process_one(job: tuple[str, Path, CodecConfig, bool, bool]) -> tuple[str, str | None, int]:
    """Returns (input, error line or None, kept patches)."""
    src, dst, cfg, png, debug = job
    try:
        sel, canvas = patchify_with_canvas(src, cfg)
        sel.save(dst)
        if png:
            render_selection(canvas.frames, canvas.frame_t, sel, dst.with_suffix(".png"))
        return src, None, len(sel)
    except (VideoDecodeError, ValueError) as e:
        msg = str(e) if isinstance(e, VideoDecodeError) else f"{src}: {e}"
        if debug:
            msg += "\n" + traceback.format_exc()
        return src, msg, 0


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run(args: argparse.Namespace) -> int:
    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        cfg = make_config(args)  # loaded: validated
        inputs = [
            str(f) for item in args.inputs for f in (media_files(item) if Path(item).is_dir() else [item])
        ]
        if not inputs:
            raise ValueError(f"no video or image files under {' '.join(args.inputs)}")
        outs = output_paths(inputs, args.out)
        problem = motion_share_problem(cfg, args.min_motion_share)
        if problem and (args.strict or problem[1]):
            raise ValueError(problem[0])
    except (ConfigError, ValueError, OSError) as e:
        msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    if problem:
        print(f"warning: {problem[0]}", file=sys.stderr)
    jobs = [(src, dst, cfg, args.png, args.debug) for src, dst in zip(inputs, outs)]
    bar = tqdm(total=len(jobs), unit="file", disable=len(jobs) < 2, file=sys.stderr)
    failures: list[str] = []
    if args.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(args.workers, initializer=_init_worker) as pool:
            results = pool.map(process_one, jobs)
            failures = _collect(results, bar)
    else:
        failures = _collect(map(process_one, jobs), bar)
    bar.close()
    if failures and len(jobs) > 1:
        print(f"{len(failures)}/{len(jobs)} inputs failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line.splitlines()[0]}", file=sys.stderr)
        if Path(args.out).suffix != ".npz":
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "failures.txt").write_text("\n".join(failures) + "\n")
    return 1 if failures else 0


def _collect(results, bar) -> list[str]:
    failures = []
    for src, err, kept in results:
        if err is not None:
            failures.append(err)
            tqdm.write(err, file=sys.stderr)
        else:
            bar.set_postfix_str(f"{Path(src).name}: {kept} patches")
        bar.update(1)
    return failures


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
