"""Towers and input modes at equal LLM visual-token budgets on the embedded default, side by side.

    python scripts/compare.py                       # 5 variants x budgets 96/128/256 x seeds 0/1, LR search
    python scripts/compare.py --quick               # smoke run: tiny models, a few steps, budget 128, seed 0
    python scripts/compare.py --budgets 128 --seeds 0 --set sft.max_steps=1500
    python scripts/compare.py --budgets 128 --variants 'OV-Encoder codec' --pretrained  # + pretrained tower

Variants: OV-Encoder codec / uniform frames / random patches, SigLIP2 frames, Qwen3-ViT frames (towers
from scratch at their debug size, as the embedded default's OV-Encoder); ``--pretrained [EXPORT]`` adds
"OV-Encoder codec, pretrained": the codec row with the export of ``scripts/pretrain_encoder.py`` (default
``outputs/pretrain_synthetic/pretrain/final``) as its tower, and its baseline "OV-Encoder codec, export
architecture": the export's architecture (e.g. ``abs_pos_embed``) from scratch. Every variant first gets the
same SFT learning-rate search (``--lrs``, at the middle budget and the first seed; the LR with the
lowest final training loss is kept, held-out data is not used to choose). Each cell is one training
run (reused when done) scored by the trainer's held-out evaluator; the table (overall and per question
type, mean ± spread over seeds, LLM tokens and tower patches per clip) goes to OUT/table.md, every run
to OUT/results.json, the plot to OUT/accuracy_vs_tokens.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoder.cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default outputs/compare[_quick])")
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="LLM visual tokens per clip")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument(
        "--variants", nargs="+", default=None, help="names (default: all five), e.g. 'SigLIP2 frames'"
    )
    ap.add_argument(
        "--pretrained",
        nargs="?",
        const="",
        default=None,
        metavar="EXPORT",
        help="add the variants 'OV-Encoder codec, pretrained' (tower: this encoder pretraining export; "
        "default outputs/pretrain_synthetic/pretrain/final) and its architecture from scratch",
    )
    ap.add_argument("--quick", action="store_true", help="tiny models, a few steps, one budget and seed")
    ap.add_argument(
        "--lrs",
        nargs="+",
        default=None,
        metavar="LR",
        help="SFT peak LRs searched per variant "
        "('recipe' = default.yaml's 1e-3; default: recipe 3e-4 1e-4; --quick: recipe)",
    )
    ap.add_argument(
        "--tune-budget", type=int, default=None, help="budget of the LR search (default: the middle one)"
    )
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="run config overrides for every run"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from llava_ov.experiments.compare import (
        ALL_VARIANTS,
        EXPORT_SCRATCH,
        PRETRAINED,
        VARIANTS,
        CompareConfig,
        compare,
        format_table,
    )

    args = parse_args(argv)
    by_name = {v.name: v for v in ALL_VARIANTS}
    if args.variants and (bad := [n for n in args.variants if n not in by_name]):
        print(f"error: unknown variant(s) {bad}; choose from {list(by_name)}", file=sys.stderr)
        return 2
    variants = tuple(by_name[n] for n in args.variants) if args.variants else VARIANTS
    if args.pretrained is not None:
        variants += tuple(v for v in (PRETRAINED, EXPORT_SCRATCH) if v not in variants)
    cfg = CompareConfig(
        out=args.out or Path("outputs/compare_quick" if args.quick else "outputs/compare"),
        budgets=tuple(args.budgets or ((128,) if args.quick else (96, 128, 256))),
        seeds=tuple(args.seeds or ((0,) if args.quick else (0, 1))),
        variants=variants,
        extra=list(args.set),
        quick=args.quick,
        tune_budget=args.tune_budget,
        **({"pretrained": Path(args.pretrained)} if args.pretrained else {}),
    )
    if args.lrs or args.quick:
        try:
            cfg.lrs = tuple(None if x == "recipe" else float(x) for x in (args.lrs or ["recipe"]))
        except ValueError:
            print(f"error: --lrs takes numbers or 'recipe', got {args.lrs}", file=sys.stderr)
            return 2
    try:
        rows, table, png = compare(cfg)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(rows))
    print(f"table: {table}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
