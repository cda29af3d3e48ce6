"""Shared helpers of the trainer tests: a tiny synthetic run config (few clips, tiny models)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_lmm.py"
DEFAULT_YAML = ROOT / "configs" / "train" / "default.yaml"


def tiny_overrides(out_dir: Path, data_root: Path, **extra: object) -> list[str]:
    """Overrides of the embedded default for a seconds-long run: 48 train / 20 held-out clips,
    the 64-wide Qwen3, a few steps per stage, no progress bar."""
    base = {
        "output_dir": out_dir,
        "data.synthetic.out_dir": data_root,
        "data.synthetic.num_train": 48,
        "data.synthetic.num_heldout": 20,
        "data.synthetic.workers": 1,
        "data.num_workers": 0,
        "data.shuffle_buffer": 8,
        "model.llm.from_scratch": "{hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16}",
        "align.max_steps": 3,
        "sft.max_steps": 4,
        "log.progress": False,
        "log.every": 1,
        "eval.max_new_tokens": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def tiny_config(out_dir: Path, data_root: Path, stage: str | None = None, **extra: object):
    from llava_ov.train.config import load_train_config

    return load_train_config(DEFAULT_YAML, tiny_overrides(out_dir, data_root, **extra), stage=stage)


def records(out_dir: Path, stage: str | None = None) -> list[dict]:
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines if line.strip()]
    return [r for r in recs if stage is None or r["stage"] == stage]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: list[str], num_ranks: int, timeout: int = 300) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus N scripts/train_lmm.py ARGS`` on CPU (one thread per rank)."""
    launcher = Path(sys.executable).parent / "deepspeed"
    cmd = [str(launcher), "--num_gpus", str(num_ranks), "--master_port", str(free_port()), str(SCRIPT), *args]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
