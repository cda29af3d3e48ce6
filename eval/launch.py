"""How ``eval/run_all.py`` launches each task: the lmms-eval command line (the launcher for one or several
processes, the model args, the output folder and the plugin's failures file), the task actually run (the
judge-free stand-in when no API judge is configured), HF_HOME and the default output folder. A helper of
``eval/run_all.py``, not a script.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the model whose checkpoints are LMM exports (llava_ov.json) and that writes failures=
OUR_MODEL = "llava_ov"
JUDGE_ENV = "LLAVA_OV_MMBENCH_JUDGE"  # auto (default) | openai | none


def default_out(ckpt: Path) -> Path:
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in Path(os.path.abspath(ckpt)).parts[1:]]
    return REPO / "outputs" / "eval" / ("_".join(parts[-3:]) or "ckpt")


def hf_home(environ: dict | None = None) -> str:
    """Absolute HF_HOME: the default cache when unset, made absolute when relative."""
    value = (os.environ if environ is None else environ).get("HF_HOME")
    return os.path.abspath(os.path.expanduser(value or "~/.cache/huggingface"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(num_processes: int) -> list[str]:
    """The command prefix that starts lmms-eval: the current python; for N > 1 processes
    ``accelerate launch`` on GPUs, and on CPU ``torchrun`` with ``ACCELERATE_USE_CPU=1`` (accelerate's
    own ``--cpu`` launcher starts a single process; under torchrun its Accelerator joins a gloo group)."""
    if num_processes == 1:
        return [sys.executable, "-m", "lmms_eval"]
    import torch  # only here: importing torch costs seconds

    bindir = Path(sys.executable).parent
    if torch.cuda.is_available():
        exe = bindir / "accelerate"
        found = str(exe) if exe.exists() else shutil.which("accelerate")
        prefix = [found, "launch"] if found else [sys.executable, "-m", "accelerate.commands.launch"]
        return [
            *prefix,
            "--num_processes",
            str(num_processes),
            "--main_process_port",
            str(free_port()),
            "-m",
            "lmms_eval",
        ]
    exe = bindir / "torchrun"
    prefix = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [
        "env",
        "ACCELERATE_USE_CPU=1",
        *prefix,
        "--nproc_per_node",
        str(num_processes),
        "--master_port",
        str(free_port()),
        "-m",
        "lmms_eval",
    ]


def failures_file(out: Path, task: str) -> Path:
    return out / task / "failed_media.jsonl"


def judge_configured(environ: dict | None = None) -> bool:
    """Whether mmbench's API judge is to be used: LLAVA_OV_MMBENCH_JUDGE=openai|none, else (auto) when
    the key of the API type lmms-eval would call is set."""
    env = os.environ if environ is None else environ
    mode = env.get(JUDGE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "openai", "none"):
        raise ValueError(f"{JUDGE_ENV} must be auto, openai or none, got {mode!r}")
    if mode != "auto":
        return mode == "openai"
    key = "AZURE_API_KEY" if env.get("API_TYPE", "openai") == "azure" else "OPENAI_API_KEY"
    return bool(env.get(key))


def launch_name(bench, judge: bool) -> str:
    """The lmms-eval task run for ``bench`` (its judge-free stand-in when no judge is configured)."""
    return bench.judge_free if bench.judge_free and not judge else bench.name


def task_command(
    task: str, args: argparse.Namespace, ckpt: Path, out: Path, include: Path, run_as: str | None = None
) -> list[str]:
    """``task``: the benchmark (its output folder); ``run_as``: the lmms-eval task launched
    (default ``task``)."""
    model_args = f"pretrained={os.path.abspath(ckpt)}"
    if args.model == OUR_MODEL:
        model_args += f",failures={failures_file(out, task)}"
    if args.model_args.strip(", "):
        model_args += "," + args.model_args.strip(", ")
    cmd = [
        *launcher(args.num_processes),
        "--model",
        args.model,
        "--model_args",
        model_args,
        "--tasks",
        run_as or task,
        "--batch_size",
        str(args.batch_size),
        "--output_path",
        str(out / task),
        "--log_samples",
        "--include_path",
        str(include),
    ]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    return cmd
