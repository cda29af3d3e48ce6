"""Train the LMM: ``deepspeed scripts/train_lmm.py [--config FILE] [--stage NAME] [key=value ...]``.

Also runs as ``python scripts/train_lmm.py`` (one process) or ``python -m llava_ov.train.cli``. Without
``--config`` it runs the embedded default ``configs/train/default.yaml``: synthetic motion-QA clips
(generated once and cached), a tiny Qwen3 + debug OV-Encoder, stages align → sft on CPU, held-out
accuracy, loss-curve PNG.
"""

from __future__ import annotations

import argparse
import sys

from encoder.cli import run_cli
from llava_ov.data import prepare_data
from llava_ov.train.build import check_run_paths, stage_data_config
from llava_ov.train.config import REPO_ROOT, TrainConfig, load_train_config
from llava_ov.train.trainer import train

DEFAULT_CONFIG = REPO_ROOT / "configs" / "train" / "default.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help=f"run config YAML (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--stage", default=None, help="run only this stage (align | sft)")
    parser.add_argument(
        "--prepare-data",
        action="store_true",
        help="generate (or find cached) the stages' synthetic data, then exit (no model, no GPU)",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. sft.max_steps=50 output_dir=runs/x"
    )
    return parser.parse_args(argv)


def prepare_stages(cfg: TrainConfig) -> None:
    for name in cfg.stages:
        prepare_data(stage_data_config(cfg, name))


def main(argv: list[str] | None = None) -> int:
    """Exit 2 with one line on a config mistake (encoder.cli.run_cli), checked before data or model."""
    args = parse_args(argv)
    cfg = load_train_config(args.config or DEFAULT_CONFIG, args.overrides, stage=args.stage)
    if args.prepare_data:
        check_run_paths(cfg)
        prepare_stages(cfg)
        return 0
    train(cfg)
    return 0


__all__ = ["DEFAULT_CONFIG", "main", "parse_args", "prepare_stages"]


if __name__ == "__main__":
    sys.exit(run_cli(main))
