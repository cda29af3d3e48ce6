"""scripts/compare.py: every tower / input mode trains at the same budget and lands in one table + plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava_ov.experiments.compare import (
    VARIANTS,
    CompareConfig,
    aggregate,
    choose_lr,
    format_search,
    format_table,
    run_overrides,
    tail_loss,
)
from llava_ov.model import TowerConfig
from llava_ov.model.budget import balanced_frames
from llava_ov.model.towers import tower_spec

ROOT = Path(__file__).resolve().parents[3]


def test_every_variant_gets_the_same_budget_and_its_own_split(tmp_path):
    cfg = CompareConfig(out=tmp_path)
    for budget in cfg.budgets:
        for v in VARIANTS:
            args = dict(a.split("=", 1) for a in run_overrides(cfg, v, budget, 0))
            assert args["media.budget"] == str(budget) and args["model.tower.name"] == v.tower
            assert args["media.mode"] == v.mode and args["seed"] == "0"
            if v.mode == "frames":
                plan = balanced_frames(tower_spec(TowerConfig(name=v.tower)), budget, 16, max_side=224)
                assert (
                    args["media.frames"] == str(plan.num_frames)
                    and 0.95 * budget <= plan.llm_tokens <= budget
                )


def test_output_folder_is_absolute(tmp_path, monkeypatch):
    """Runs start in the repository root: a relative --out must still mean the caller's folder."""
    monkeypatch.chdir(tmp_path)
    cfg = CompareConfig(out=Path("cmp"))
    assert cfg.out == tmp_path / "cmp" and cfg.run_dir(VARIANTS[0], 96, 0).is_relative_to(tmp_path)


def test_lr_search_cells_and_choice(tmp_path):
    cfg = CompareConfig(out=tmp_path, budgets=(256, 96, 128))
    assert cfg.tuning_budget() == 128 and cfg.lrs[0] is None  # the recipe's LR is always a candidate
    v = VARIANTS[3]
    recipe = dict(a.split("=", 1) for a in run_overrides(cfg, v, 128, 0))
    assert "sft.optim.lr" not in recipe and recipe["output_dir"].endswith("b128_s0")  # earlier cells reused
    low = dict(a.split("=", 1) for a in run_overrides(cfg, v, 128, 0, 3e-4))
    assert low["sft.optim.lr"] == low["sft.optim.lr_vision"] == "0.0003" and low["output_dir"].endswith(
        "b128_s0_lr0.0003"
    )
    # the criterion: mean SFT loss over the last 10% of steps (align steps and eval records ignored)
    steps = [{"stage": "align", "step": 1, "max_steps": 2, "loss": 0.0}]
    steps += [
        {"stage": "sft", "step": i, "max_steps": 100, "loss": 5.0 if i <= 90 else 1.0 + (i % 2)}
        for i in range(1, 101)
    ]
    assert tail_loss(steps) == pytest.approx(1.5) and tail_loss([{"stage": "sft", "accuracy": 1.0}]) is None
    search = [
        {"variant": v.name, "lr": None, "train_loss_tail": 0.61, "accuracy": 0.30},
        {"variant": v.name, "lr": 3e-4, "train_loss_tail": 0.40, "accuracy": 0.29},
    ]
    assert choose_lr(search) == 3e-4  # lowest training loss wins, whatever the held-out accuracy says
    assert choose_lr([dict(search[0], train_loss_tail=0.4), search[1]]) is None  # ties: the recipe
    table = format_search(search, {v.name: 3e-4})
    assert "| 0.0003 | 0.400 | 0.290 | yes |" in table and "| recipe | 0.610 | 0.300 |  |" in table


def test_aggregate_mean_and_spread():
    runs = [
        {
            "variant": "a",
            "budget": 128,
            "seed": s,
            "accuracy": acc,
            "chance": 0.25,
            "per_type": {"x": acc},
            "llm_tokens": 120.0 + s,
            "tower_patches": 128.0,
        }
        for s, acc in [(0, 0.5), (1, 0.7)]
    ]
    (row,) = aggregate(runs)
    assert row["accuracy"] == pytest.approx(0.6) and row["spread"] == pytest.approx(0.2) and row["seeds"] == 2
    assert row["llm_tokens"] == pytest.approx(120.5) and "0.600 ± 0.200 (n=2)" in format_table([row])


@pytest.mark.slow
def test_quick_compare_writes_table_and_plot(tmp_path):
    out = tmp_path / "cmp"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    table = (out / "table.md").read_text()
    assert all(v.name in table for v in VARIANTS) and "128" in table
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["variant"] for r in runs} == {v.name for v in VARIANTS}
    assert all(r["llm_tokens"] <= 128 for r in runs)  # the budget is a cap for every variant
    assert {r["variant"]: r["tower_patches"] for r in runs}[
        "Qwen3-ViT frames"
    ] == 8 * 128  # 4 patches x 2 frames
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 5000
