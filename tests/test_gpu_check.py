"""``benchmarks/gpu_check.sh --dry-run``: every step of the GPU check runs at tiny shapes on the CPU and
the summary reads them, so that the first run on a lent GPU does not fail on a typo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_reaches_its_summary(tmp_path):
    env = {
        **os.environ,
        "GPU_CHECK_DIR": str(tmp_path / "check"),
        "PYTHON": sys.executable,
        "GPU_CHECK_SECONDS": "900",
    }
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = (tmp_path / "check" / "steps.txt").read_text().splitlines()
    names = [line.split()[0] for line in steps]
    assert names == [
        "parity",
        "mfu",
        "main_job_data",
        "vit_packing",
        "main_job",
        "mfu_checkpointing",
        "mfu_compile",
    ]
    assert all(" rc=0" in line for line in steps), steps
    summary = (tmp_path / "check" / "summary.md").read_text()
    assert summary.count("| parity verdict") == 4 and "FAIL" not in summary
    assert "| MFU 512 tokens/pack |" in summary and "| MFU checkpointing 1024 tokens/pack |" in summary
    assert (
        "| MFU compile 512 tokens/pack |" in summary and "ViT packing ratio (forward + backward)" in summary
    )
    assert "| main job held-out |" in summary and "| main job SFT | 4 steps" in summary
    assert (tmp_path / "check" / "trace_16k.json").stat().st_size > 0
