"""Attentive probe on a frozen vision tower: video classification at an equal LLM-token budget.

    python scripts/probe.py                            # embedded default (synthetic motion classes)
    python scripts/probe.py --tower siglip2            # same budget; SigLIP2 takes uniform frames
    python scripts/probe.py --compare ov_encoder:codec ov_encoder:frames siglip2:frames
    python scripts/probe.py --tower-path lmms-lab-encoder/onevision-encoder-large --set tower.size=large
    python scripts/probe.py --data videos/ --set media.clip_frames=64 media.input_size=224  # <split>/<class>/
    python scripts/probe.py --shards 'shards/{split}/shard-{000000..000009}.tar' --budget 2048
    python scripts/probe.py --set epochs=5 synthetic.num_train=8 heads=2 pos_embed=sincos3d

The embedded default: the random-init OV-Encoder ``debug`` tower, codec input (``media.mode=auto``: codec
for towers that take it, else uniformly sampled frames), 512 LLM visual tokens per clip over the 16
frames of a 112-px clip, four synthetic motion classes (the direction of a mover; chance 0.25) written
once to ``${LLAVA_OV_CACHE:-.cache/llava_ov}/probe_motion/``. Splits are ``train`` and ``heldout``; a
webdataset sample is ``{key}.mp4`` + ``{key}.json`` with a ``label`` (or ``class``) field, and ``{split}``
in the shard pattern (or the JSON's ``split`` field) picks the split
(``llava_ov.experiments.probe.ProbeDataConfig``).

Prints a table and writes ``OUT/result.json`` (OUT = ``--out``, default ``outputs/probe/<name>``; with
``--compare`` one folder per run under OUT, default ``outputs/probe``, plus ``OUT/comparison.json``).
``--set key=value`` overrides any ``llava_ov.experiments.probe.ProbeConfig`` field strictly. Exit status:
0 done, 1 a data / model error (one line; a traceback with ``--debug``), 2 a config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tower", help="ov_encoder | siglip2 | qwen3_vit (random init unless --tower-path)")
    ap.add_argument("--tower-path", help="pretrained tower weights (hub id or folder)")
    ap.add_argument("--mode", choices=["auto", "codec", "random", "frames"], help="input mode (default auto)")
    ap.add_argument("--budget", type=int, help="LLM visual tokens per clip (default 512)")
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="DIR", help="folder per class: DIR/<split>/<class>/*.mp4")
    data.add_argument("--shards", metavar="PATTERN", help="webdataset shards ({split} = train / heldout)")
    ap.add_argument("--epochs", type=int, help="probe training epochs")
    ap.add_argument("--seed", type=int, help="seed of the tower's random init, the probe and its batches")
    ap.add_argument("--compare", nargs="+", metavar="TOWER[:MODE]", help="several runs at the same budget")
    ap.add_argument("--out", help="output folder (default outputs/probe/<name>)")
    ap.add_argument("--config", help="YAML file with ProbeConfig fields")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return ap


def run_overrides(args: argparse.Namespace, tower: str | None, mode: str | None) -> list[str]:
    """The flags as ``key=value`` overrides (``--set`` last, so it wins)."""
    from llava_ov.experiments.probe.config import TOWER_DEFAULTS

    out = []
    if tower:
        out.append(f"tower.name={tower}")
        out += [f"tower.{k}={v}" for k, v in TOWER_DEFAULTS.get(tower, {}).items()]
    flags = {
        "tower.path": args.tower_path,
        "media.mode": mode,
        "media.budget": args.budget,
        "epochs": args.epochs,
        "seed": args.seed,
        "data.root": args.data,
        "data.shards": args.shards,
    }
    out += [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.data:
        out.append("data.source=folder")
    if args.shards:
        out.append("data.source=shards")
    if args.quiet:
        out.append("progress=false")
    return out + list(args.set)


def make_config(args: argparse.Namespace, tower: str | None = None, mode: str | None = None):
    from encoder.typed_config import load_config
    from llava_ov.experiments.probe import ProbeConfig

    return load_config(ProbeConfig, args.config, run_overrides(args, tower, mode))


def runs(args: argparse.Namespace) -> list[tuple[str | None, str | None]]:
    if not args.compare:
        return [(args.tower, args.mode)]
    if args.tower or args.mode or args.tower_path:
        raise ValueError("--compare names the towers and modes; drop --tower / --mode / --tower-path")
    out = []
    for item in args.compare:
        tower, _, mode = item.partition(":")
        out.append((tower, mode or None))
    return out


def fail(message: str, debug: bool, code: int) -> int:
    print(f"error: {message.splitlines()[0] if message else 'unknown error'}", file=sys.stderr)
    if debug:
        traceback.print_exc()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from encoder.typed_config import ConfigError
    from llava_ov.experiments.probe import format_table, run_probe, summary_record, write_result

    try:
        configs = [make_config(args, tower, mode) for tower, mode in runs(args)]
    except (ConfigError, ValueError) as e:
        return fail(f"config: {e}", args.debug, 2)
    results = []
    for cfg in configs:
        if args.compare:
            out = Path(args.out or cfg.output_dir) / cfg.run_name
        else:
            out = Path(args.out or Path(cfg.output_dir) / cfg.run_name)
        try:
            result = run_probe(cfg)
        except (ConfigError, ValueError, OSError, ImportError) as e:
            return fail(f"{cfg.run_name}: {e}", args.debug, 1)
        path = write_result(result, out)
        line = f"{cfg.run_name}: top-1 {result['top1']:.3f} (chance {result['chance']:.2f}) -> {path}"
        print(line, file=sys.stderr)
        results.append(result)
    print(format_table(results))
    if args.compare:
        summary = Path(args.out or configs[0].output_dir) / "comparison.json"
        summary.write_text(json.dumps([summary_record(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake: one line, exit 2

    sys.exit(run_cli(main))
