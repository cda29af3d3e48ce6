"""Controlled comparison: towers and input modes at equal LLM visual-token budgets, same data, same steps.

Each variant is the embedded default (``configs/train/default.yaml``) with the tower and the input
mode changed; ``media.budget`` is the same for every variant of a column. Frame-based variants get
their own frames/resolution split per budget (:func:`llava_ov.model.budget.balanced_frames`: the split
that spends most of the budget, nearest 8 frames per frame group), so the codec recipe is not the
only one shaped for the budget. Every run is a separate ``scripts/train_lmm.py`` process writing to
``OUT/<variant>/b<budget>_s<seed>/``; its own held-out evaluator scores it (``sft/eval.json``), and the
run's ``metrics.jsonl`` gives the LLM visual tokens and tower patches it actually used per sample
(the codec modes with ``min_score`` spend up to the budget, not always all of it).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava_ov.model import TowerConfig
from llava_ov.model.budget import balanced_frames
from llava_ov.model.towers import tower_spec
from llava_ov.train.metrics import save_figure

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = ROOT / "scripts" / "train_lmm.py"
DEFAULT_CONFIG = ROOT / "configs" / "train" / "default.yaml"


@dataclass(frozen=True)
class Variant:
    name: str
    tower: str
    mode: str  # codec | random | frames

    def overrides(self, budget: int, clip_frames: int, max_side: int) -> list[str]:
        out = [f"model.tower.name={self.tower}", f"media.mode={self.mode}", f"media.budget={budget}"]
        if self.tower != "ov_encoder":
            out.append("model.tower.output_layer=-1")
        if self.mode == "frames":
            spec = tower_spec(TowerConfig(name=self.tower))
            out.append(f"media.frames={balanced_frames(spec, budget, clip_frames, max_side=max_side).num_frames}")
        return out


VARIANTS = (
    Variant("OV-Encoder codec", "ov_encoder", "codec"),
    Variant("OV-Encoder frames", "ov_encoder", "frames"),
    Variant("OV-Encoder random", "ov_encoder", "random"),
    Variant("SigLIP2 frames", "siglip2", "frames"),
    Variant("Qwen3-ViT frames", "qwen3_vit", "frames"),
)
QUICK_OVERRIDES = [  # seconds-long runs for a smoke test of the whole comparison
    "data.synthetic.num_train=48", "data.synthetic.num_heldout=20", "data.synthetic.workers=1",
    "data.num_workers=0", "data.shuffle_buffer=8", "align.max_steps=2", "sft.max_steps=6", "log.every=2",
    "model.llm.from_scratch={hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
    "num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16}",
]


@dataclass
class CompareConfig:
    out: Path = Path("outputs/compare")
    budgets: tuple[int, ...] = (96, 128, 256)
    seeds: tuple[int, ...] = (0, 1)
    variants: tuple[Variant, ...] = VARIANTS
    clip_frames: int = 16  # frames of the embedded default's clips (and of its codec plan)
    max_side: int = 224  # frames mode: largest side a split may resize the 112-px clips to (2x)
    extra: list[str] = field(default_factory=list)  # overrides for every run (e.g. sft.max_steps=1500)
    quick: bool = False

    def run_dir(self, variant: Variant, budget: int, seed: int) -> Path:
        return self.out / variant.name.replace(" ", "_").lower() / f"b{budget}_s{seed}"


def run_overrides(cfg: CompareConfig, variant: Variant, budget: int, seed: int) -> list[str]:
    run = cfg.run_dir(variant, budget, seed)
    # one synthetic cache per codec setting (the clips are shared, their precomputed patches are not)
    cache = cfg.out / "synthetic" / f"{variant.tower}_{variant.mode}_b{budget}{'_quick' if cfg.quick else ''}"
    base = [f"output_dir={run}", f"seed={seed}", f"data.synthetic.out_dir={cache}", "log.progress=false"]
    return base + (QUICK_OVERRIDES if cfg.quick else []) + variant.overrides(budget, cfg.clip_frames, cfg.max_side) + cfg.extra


def run_one(cfg: CompareConfig, variant: Variant, budget: int, seed: int) -> dict[str, Any]:
    """Train + evaluate one cell (reused when its eval.json exists); the run's summary record."""
    run = cfg.run_dir(variant, budget, seed)
    eval_file = run / "sft" / "eval.json"
    start = time.time()
    if not eval_file.is_file():
        run.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(TRAIN_SCRIPT), "--config", str(DEFAULT_CONFIG), *run_overrides(cfg, variant, budget, seed)]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        with open(run / "train.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        if rc != 0 or not eval_file.is_file():
            tail = (run / "train.log").read_text().splitlines()[-3:]
            raise RuntimeError(f"{variant.name} budget {budget} seed {seed} failed (rc {rc}): {' | '.join(tail)}")
    summary = json.loads(eval_file.read_text())
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    sft = [r for r in steps if r.get("stage") == "sft" and "llm_visual_tokens_per_sample" in r]
    return {
        "variant": variant.name, "tower": variant.tower, "mode": variant.mode, "budget": budget, "seed": seed,
        "accuracy": summary["accuracy"], "chance": summary["chance"],
        "per_type": {k: v["accuracy"] for k, v in summary["per_type"].items()},
        "llm_tokens": statistics.fmean(r["llm_visual_tokens_per_sample"] for r in sft) if sft else None,
        "tower_patches": statistics.fmean(r["tower_patches_per_sample"] for r in sft) if sft else None,
        "seconds": round(time.time() - start, 1),
    }


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread (max - min over seeds) per (variant, budget), per question type too."""
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["variant"], r["budget"]), []).append(r)
    rows = []
    for (variant, budget), rs in cells.items():
        acc = [r["accuracy"] for r in rs]
        types = sorted({t for r in rs for t in r["per_type"]})
        rows.append({
            "variant": variant, "budget": budget, "seeds": len(rs), "accuracy": statistics.fmean(acc),
            "spread": max(acc) - min(acc), "chance": rs[0]["chance"],
            "per_type": {t: statistics.fmean(r["per_type"][t] for r in rs if t in r["per_type"]) for t in types},
            "llm_tokens": _mean([r["llm_tokens"] for r in rs]), "tower_patches": _mean([r["tower_patches"] for r in rs]),
        })
    return rows


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    types = sorted({t for r in rows for t in r["per_type"]})
    head = ["variant", "budget", "LLM tok/clip", "tower patches", "overall (± spread)", *types]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in sorted(rows, key=lambda r: (r["budget"], r["variant"])):
        tok = "-" if r["llm_tokens"] is None else f"{r['llm_tokens']:.0f}"
        patches = "-" if r["tower_patches"] is None else f"{r['tower_patches']:.0f}"
        cells = [r["variant"], str(r["budget"]), tok, patches, f"{r['accuracy']:.3f} ± {r['spread']:.3f} (n={r['seeds']})",
                 *(f"{r['per_type'].get(t, float('nan')):.3f}" for t in types)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Held-out accuracy against LLM visual tokens per clip, one line per variant (chance dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        rs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["budget"])
        x = [r["budget"] for r in rs]
        y = [r["accuracy"] for r in rs]
        err = [r["spread"] / 2 for r in rs]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=f"C{i}", label=variant)
    chance = rows[0]["chance"] if rows else 0.0
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
    ax.set_xlabel("LLM visual tokens per clip (budget)")
    ax.set_ylabel("held-out accuracy (synthetic motion QA)")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Towers and input modes at equal visual-token budgets")
    return save_figure(fig, path)


def compare(cfg: CompareConfig, progress: bool = True) -> tuple[list[dict[str, Any]], Path, Path]:
    """Every cell (skipping those already done), then the table (markdown), results.json and the plot."""
    from tqdm import tqdm

    cells = [(v, b, s) for b in cfg.budgets for v in cfg.variants for s in cfg.seeds]
    for v, b, s in cells:  # plan every cell up front: bad settings fail before hours of training
        run_overrides(cfg, v, b, s)
    records = []
    bar = tqdm(cells, desc="compare", disable=not progress)
    for variant, budget, seed in bar:
        bar.set_postfix_str(f"{variant.name} b{budget} s{seed}")
        records.append(run_one(cfg, variant, budget, seed))
    rows = aggregate(records)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.json").write_text(json.dumps({"runs": records, "rows": rows}, indent=1))
    table = cfg.out / "table.md"
    table.write_text(format_table(rows) + "\n")
    return rows, table, plot(rows, cfg.out / "accuracy_vs_tokens.png")


__all__ = ["VARIANTS", "CompareConfig", "Variant", "aggregate", "compare", "format_table", "plot", "run_one",
           "run_overrides"]
