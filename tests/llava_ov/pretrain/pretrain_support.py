"""A seconds-long pretraining run of the embedded default: a few tiny clips, an 8-centre bank, 6 steps."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "pretrain_encoder.py"
DEFAULT_YAML = ROOT / "configs" / "pretrain" / "default.yaml"


def tiny_overrides(out: Path, data_root: Path, bank: Path, **extra: object) -> list[str]:
    base = {
        "output_dir": out,
        "data.synthetic.out_dir": data_root,
        "data.synthetic.num_train": 32,
        "data.synthetic.num_heldout": 4,
        "data.synthetic.size": 56,
        "data.synthetic.num_frames": 8,
        "data.synthetic.workers": 1,
        "data.synthetic.samples_per_shard": 8,
        "data.synthetic.store": "mp4",
        "data.codec.num_frames": 4,
        "data.codec.decode.num_frames": 8,
        "data.codec.decode.input_size": 56,
        "data.codec.select.budget": 40,
        "heads.video.bank": bank,
        "heads.video.build": (
            "{teacher: pixels, frames: 4, input_size: 28, pool: 2, centres: 8, topk: 3, backend: torch}"
        ),
        "heads.video.num_labels": 2,
        "data.max_samples": 4,
        "data.num_workers": 0,
        "data.shuffle_buffer": 8,
        "pretrain.max_steps": 6,
        "checkpoint.every": 3,
        "checkpoint.keep": 2,
        "log.progress": False,
        "log.every": 1,
        "log.plot": False,
        "probe.enabled": False,
        "threads": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def tiny_config(out: Path, data_root: Path, bank: Path, **extra: object):
    from llava_ov.pretrain.config import load_pretrain_config

    return load_pretrain_config(DEFAULT_YAML, tiny_overrides(out, data_root, bank, **extra))


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if x.strip()]


def copy_checkpoint(src: Path, dst: Path, step: int) -> None:
    ck = f"pretrain/checkpoints/step_{step:08d}"
    shutil.copytree(src / ck, dst / ck)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: list[str], num_ranks: int, timeout: int = 600) -> subprocess.CompletedProcess:
    launcher = Path(sys.executable).parent / "deepspeed"
    cmd = [str(launcher), "--num_gpus", str(num_ranks), "--master_port", str(free_port()), str(SCRIPT), *args]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
