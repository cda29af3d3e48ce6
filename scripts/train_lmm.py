"""Train the LMM: ``deepspeed scripts/train_lmm.py [--config FILE] [--stage NAME] [key=value ...]``.

Also runs as ``python scripts/train_lmm.py`` (one process) or ``python -m llava_ov.train.cli`` (the same
entry point, :mod:`llava_ov.train.cli`). Without ``--config`` it runs the embedded default
``configs/train/default.yaml``: synthetic motion-QA clips (generated once and cached), a tiny Qwen3 +
debug OV-Encoder, stages align → sft on CPU, held-out accuracy, loss-curve PNG.
"""

from __future__ import annotations

import sys

from encoder.cli import run_cli
from llava_ov.train.cli import DEFAULT_CONFIG, main, parse_args, prepare_stages

__all__ = ["DEFAULT_CONFIG", "main", "parse_args", "prepare_stages"]

if __name__ == "__main__":
    sys.exit(run_cli(main))
