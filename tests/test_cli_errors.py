"""Every entry point answers a user's mistake with one line on stderr and exit status 2 (no traceback),
checked before any data is generated or any model is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "tower-name": ("train_lmm", ["model.tower.name=siglip"], "unknown vision tower 'siglip'"),
    "tower-path": (
        "train_lmm",
        ["model.tower.path=/nonexistent/tower"],
        "model.tower.path='/nonexistent/tower': no such",
    ),
    "llm-path": (
        "train_lmm",
        ["model.llm.from_scratch=null", "model.llm.path=./no_such_llm"],
        "model.llm.path='./no_such_llm'",
    ),
    "init-from": (
        "train_lmm",
        ["sft.init_from=/nonexistent/export"],
        "sft.init_from='/nonexistent/export': no such",
    ),
    "key-typo": ("train_lmm", ["sft.max_stps=3"], "did you mean 'max_steps'"),
    "yaml": ("train_lmm", ["data.sources=[{name: x, shards: /d/s-{0..3}.tar}]"], "is not valid YAML"),
    "shards": (
        "train_lmm",
        ['data.sources=[{name: x, shards: "/nonexistent/s-{0..3}.tar"}]'],
        "source 'x': 4 shard file(s)",
    ),
    "config-file": ("train_lmm", ["--config", "no_such.yaml"], "config file not found"),
    "encoder-size": ("pretrain_encoder", ["encoder.size=lrge"], "unknown config name 'lrge'"),
    "bank-empty-dir": ("build_concept_bank", ["--shards", "{tmp}"], "no shards match"),
    "bank-braces": ("build_concept_bank", ["--shards", "{tmp}/s-{0..2}.tar"], "3 of the 3 shards"),
    "convert-json": (
        "convert_llava_json",
        ["{tmp}/none.json", "--media-root", "{tmp}", "--out", "{tmp}/o"],
        "cannot read",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_gives_one_line_and_exit_2(case, tmp_path):
    script, args, expected = CASES[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LLAVA_OV_DEBUG")}
    env["LLAVA_OV_CACHE"] = str(tmp_path / "cache")  # nothing may be generated before the check
    proc = subprocess.run(
        [sys.executable, f"scripts/{script}.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [x for x in proc.stderr.splitlines() if x.strip() and "[WARNING]" not in x]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "cache").exists()


def test_only_rank_0_prints_and_debug_shows_the_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLAVA_OV_DEBUG"}
    run = [sys.executable, "scripts/pretrain_encoder.py", "encoder.size=lrge"]
    other = subprocess.run(
        run, cwd=ROOT, env={**env, "RANK": "1"}, capture_output=True, text=True, timeout=300
    )
    assert other.returncode == 2 and "error:" not in other.stderr
    debug = subprocess.run(
        run, cwd=ROOT, env={**env, "LLAVA_OV_DEBUG": "1"}, capture_output=True, text=True, timeout=300
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "unknown config name" in debug.stderr


def test_run_cli_units(capsys, monkeypatch):
    from encoder.cli import check_local_path, looks_local, one_line, run_cli

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LLAVA_OV_DEBUG", raising=False)
    assert run_cli(lambda: None) == 0 and run_cli(lambda: 3) == 3
    assert run_cli(lambda: open("/nonexistent/file.json")) == 2
    assert capsys.readouterr().err.startswith("error: No such file or directory: /nonexistent/file.json")
    assert one_line(ValueError("first\nsecond")) == "first"
    assert (
        not looks_local("Qwen/Qwen3-1.7B")
        and looks_local("./x")
        and looks_local("/x")
        and looks_local("a/b/c")
    )
    check_local_path("Qwen/Qwen3-1.7B", "model.llm.path")  # a hub id passes
    with pytest.raises(ValueError, match="no such folder"):
        check_local_path("/nonexistent", "model.llm.path")
