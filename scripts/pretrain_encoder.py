"""Pretrain the OV-Encoder: ``deepspeed scripts/pretrain_encoder.py [--config FILE] [key=value ...]``.

Also runs as ``python scripts/pretrain_encoder.py`` (one process). Without ``--config`` it runs the
embedded default ``configs/pretrain/default.yaml``: the synthetic clips, a concept bank built from
their pixels, the debug encoder pretrained with the partial-FC cluster-discrimination loss on CPU, a
loss-curve PNG, and an attentive probe of the export vs the same encoder at random init. The export
(``{output_dir}/pretrain/final``) is what the LMM loads with ``model.tower.path=...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoder.cli import run_cli

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "default.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help=f"run config YAML (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. pretrain.max_steps=50 output_dir=runs/x"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit 2 with one line on a config mistake (encoder.cli.run_cli)."""
    from llava_ov.pretrain.config import load_pretrain_config
    from llava_ov.pretrain.run import pretrain

    args = parse_args(argv)
    pretrain(load_pretrain_config(args.config or DEFAULT_CONFIG, args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
