"""Controlled comparison: towers and input modes at equal LLM visual-token budgets, same data, same steps.

Each variant is the base run config (``CompareConfig.base_config``: the embedded default
``configs/train/default.yaml``) with the tower and the input mode changed; ``media.budget`` is the same
for every variant of a column. Frame-based variants get their own frames/resolution split per budget
(:func:`llava_ov.model.budget.balanced_frames`: the split that spends most of the budget, nearest 8
frames per frame group), so the codec recipe is not the only one shaped for the budget. Every variant
also gets the same small search over the SFT peak learning rate (``lrs``, at one budget and the first
seed), the LR chosen by the run's own final training loss (no held-out data is used to choose), then
every cell of that variant trains at its LR. Every run is a separate ``python -m llava_ov.train.cli``
process, started in the working directory, writing to ``OUT/<variant>/b<budget>_s<seed>/``; its own
held-out evaluator scores it (``sft/eval.json``), and the run's ``metrics.jsonl`` gives the LLM visual
tokens and tower patches it actually used per sample (the codec modes with ``min_score`` spend up to
the budget, not always all of it).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from encoder.model import ViTConfig, config_to_hf_dict, read_config
from llava_ov.model import TowerConfig
from llava_ov.model.budget import balanced_frames
from llava_ov.model.towers import tower_spec
from llava_ov.report import format_table as render_table
from llava_ov.train.build import resolve_path
from llava_ov.train.distributed import child_job_env
from llava_ov.train.metrics import save_figure

TRAIN_MODULE = "llava_ov.train.cli"  # every run: ``python -m llava_ov.train.cli --config BASE ...``


@dataclass(frozen=True)
class Variant:
    name: str
    tower: str
    mode: str  # codec | random | frames
    # the tower starts from the encoder pretraining export (CompareConfig.pretrained)
    pretrained: bool = False
    # the export's architecture (every config.json field, e.g. abs_pos_embed) at random init: the
    # from-scratch row that the pretrained one is fairly compared with
    export_architecture: bool = False

    def overrides(
        self,
        budget: int,
        clip_frames: int,
        max_side: int,
        lr: float | None = None,
        tower_path: Path | None = None,
    ) -> list[str]:
        out = [f"model.tower.name={self.tower}", f"media.mode={self.mode}", f"media.budget={budget}"]
        if self.pretrained or self.export_architecture:
            if tower_path is None:
                raise ValueError(f"variant {self.name!r} needs the pretraining export's path")
            if self.pretrained:
                out.append(f"model.tower.path={tower_path}")
            else:
                out.append(f"model.tower.ov_encoder={json.dumps(export_architecture(tower_path))}")
        if lr is not None:  # every module's SFT peak LR (the embedded default uses one LR for all)
            out += [f"sft.optim.lr={lr:g}", f"sft.optim.lr_vision={lr:g}"]
        if self.tower != "ov_encoder":
            out.append("model.tower.output_layer=-1")
        if self.mode == "frames":
            spec = tower_spec(TowerConfig(name=self.tower))
            out.append(
                f"media.frames={balanced_frames(spec, budget, clip_frames, max_side=max_side).num_frames}"
            )
        return out


VARIANTS = (
    Variant("OV-Encoder codec", "ov_encoder", "codec"),
    Variant("OV-Encoder frames", "ov_encoder", "frames"),
    Variant("OV-Encoder random", "ov_encoder", "random"),
    Variant("SigLIP2 frames", "siglip2", "frames"),
    Variant("Qwen3-ViT frames", "qwen3_vit", "frames"),
)
#: The codec row with the encoder pretraining export as its tower (``scripts/pretrain_encoder.py``
#: first); everything else as "OV-Encoder codec". Not in the default set: it needs that export.
PRETRAINED_EXPORT = Path("outputs/pretrain_synthetic/pretrain/final")  # the embedded default's export
PRETRAINED = Variant("OV-Encoder codec, pretrained", "ov_encoder", "codec", pretrained=True)
#: Its baseline: the export's architecture from scratch (the default export adds ``abs_pos_embed``, which
#: the "OV-Encoder codec" row lacks).
EXPORT_SCRATCH = Variant(
    "OV-Encoder codec, export architecture", "ov_encoder", "codec", export_architecture=True
)
ALL_VARIANTS = (*VARIANTS, PRETRAINED, EXPORT_SCRATCH)


def export_architecture(path: Path) -> dict:
    """Every architecture field of an encoder export's ``config.json`` (as ``ViTConfig`` overrides)."""
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    return {k: v for k, v in config_to_hf_dict(read_config(path)).items() if k in fields}


QUICK_OVERRIDES = [  # seconds-long runs for a smoke test of the whole comparison
    "data.synthetic.num_train=48",
    "data.synthetic.num_heldout=20",
    "data.synthetic.workers=1",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "align.max_steps=2",
    "sft.max_steps=6",
    "log.every=2",
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
    # SFT peak LRs searched for every variant (None: the recipe's own, sft.optim.lr of default.yaml), at
    # ``tune_budget`` (None: the middle budget) and the first seed; one value: no search.
    lrs: tuple[float | None, ...] = (None, 3e-4, 1e-4)
    tune_budget: int | None = None
    tail: float = 0.1  # the choice: lowest mean SFT training loss over this last fraction of steps
    # the run config every variant changes: from the working directory, else the repository's (resolve_path)
    base_config: str = "configs/train/default.yaml"
    # the tower of pretrained variants: the embedded default's export of scripts/pretrain_encoder.py
    pretrained: Path = PRETRAINED_EXPORT

    def __post_init__(self) -> None:
        # absolute folders: the run overrides name them, whatever folder a run process starts in
        self.out = Path(self.out).absolute()
        self.pretrained = Path(self.pretrained).absolute()

    def check(self) -> None:
        """Fail before any run when a pretrained variant has no export to start from."""
        needs = [v.name for v in self.variants if v.pretrained or v.export_architecture]
        if needs and not (self.pretrained / "config.json").is_file():
            raise RuntimeError(
                f"no encoder pretraining export at {self.pretrained} (variants {needs}): "
                "run `python scripts/pretrain_encoder.py` first, or pass --pretrained PATH"
            )

    def run_dir(self, variant: Variant, budget: int, seed: int, lr: float | None = None) -> Path:
        suffix = "" if lr is None else f"_lr{lr:g}"
        folder = variant.name.replace(",", "").replace(" ", "_").lower()  # "OV-Encoder codec, pretrained"
        return self.out / folder / f"b{budget}_s{seed}{suffix}"

    def tuning_budget(self) -> int:
        budgets = sorted(self.budgets)
        return self.tune_budget if self.tune_budget is not None else budgets[(len(budgets) - 1) // 2]


def run_overrides(
    cfg: CompareConfig, variant: Variant, budget: int, seed: int, lr: float | None = None
) -> list[str]:
    run = cfg.run_dir(variant, budget, seed, lr)
    # one synthetic cache per codec setting (the clips are shared, their precomputed patches are not)
    cache = cfg.out / "synthetic" / f"{variant.tower}_{variant.mode}_b{budget}{'_quick' if cfg.quick else ''}"
    base = [f"output_dir={run}", f"seed={seed}", f"data.synthetic.out_dir={cache}", "log.progress=false"]
    return (
        base
        + (QUICK_OVERRIDES if cfg.quick else [])
        + variant.overrides(budget, cfg.clip_frames, cfg.max_side, lr, cfg.pretrained)
        + cfg.extra
    )


def run_one(
    cfg: CompareConfig, variant: Variant, budget: int, seed: int, lr: float | None = None
) -> dict[str, Any]:
    """Train + evaluate one cell (reused when its eval.json exists); the run's summary record."""
    run = cfg.run_dir(variant, budget, seed, lr)
    eval_file = run / "sft" / "eval.json"
    start = time.time()
    if not eval_file.is_file():
        run.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            TRAIN_MODULE,
            "--config",
            str(resolve_path(cfg.base_config)),
            *run_overrides(cfg, variant, budget, seed, lr),
        ]
        env = child_job_env()
        with open(run / "train.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0 or not eval_file.is_file():
            tail = (run / "train.log").read_text().splitlines()[-3:]
            raise RuntimeError(
                f"{variant.name} budget {budget} seed {seed} failed (rc {rc}): {' | '.join(tail)}"
            )
    summary = json.loads(eval_file.read_text())
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    sft = [r for r in steps if r.get("stage") == "sft" and "llm_visual_tokens_per_sample" in r]
    return {
        "variant": variant.name,
        "tower": variant.tower,
        "mode": variant.mode,
        "budget": budget,
        "seed": seed,
        "lr": lr,
        "train_loss_tail": tail_loss(steps, cfg.tail),
        "accuracy": summary["accuracy"],
        "chance": summary["chance"],
        "per_type": {k: v["accuracy"] for k, v in summary["per_type"].items()},
        "llm_tokens": statistics.fmean(r["llm_visual_tokens_per_sample"] for r in sft) if sft else None,
        "tower_patches": statistics.fmean(r["tower_patches_per_sample"] for r in sft) if sft else None,
        "seconds": round(time.time() - start, 1),
    }


def tail_loss(steps: Sequence[dict[str, Any]], tail: float = 0.1) -> float | None:
    """Mean SFT training loss over the last ``tail`` fraction of its steps (the LR search's criterion)."""
    sft = [r for r in steps if r.get("stage") == "sft" and "loss" in r and "max_steps" in r]
    if not sft:
        return None
    first = sft[-1]["max_steps"] * (1.0 - tail)
    losses = [r["loss"] for r in sft if r["step"] > first] or [sft[-1]["loss"]]
    return statistics.fmean(losses)


def choose_lr(records: Sequence[dict[str, Any]]) -> float | None:
    """The LR of the lowest final training loss among one variant's search runs (ties: the first)."""
    scored = [r for r in records if r["train_loss_tail"] is not None]
    if not scored:
        raise RuntimeError(f"no training loss logged in the LR search of {records[0]['variant']}")
    return min(scored, key=lambda r: r["train_loss_tail"])["lr"]


def format_search(search: Sequence[dict[str, Any]], chosen: dict[str, float | None]) -> str:
    header = ["variant", "SFT peak LR", "final train loss", "held-out (not used to choose)", "chosen"]
    rows = [
        [
            r["variant"],
            "recipe" if r["lr"] is None else f"{r['lr']:g}",
            f"{r['train_loss_tail']:.3f}",
            f"{r['accuracy']:.3f}",
            "yes" if chosen.get(r["variant"], "-") == r["lr"] else "",
        ]
        for r in search
    ]
    return render_table(header, rows, markdown=True)


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread (max - min over seeds) per (variant, budget), per question type too."""
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["variant"], r["budget"]), []).append(r)
    rows = []
    for (variant, budget), rs in cells.items():
        acc = [r["accuracy"] for r in rs]
        types = sorted({t for r in rs for t in r["per_type"]})
        rows.append(
            {
                "variant": variant,
                "budget": budget,
                "seeds": len(rs),
                "accuracy": statistics.fmean(acc),
                "spread": max(acc) - min(acc),
                "chance": rs[0]["chance"],
                "lr": rs[0].get("lr"),
                "per_type": {
                    t: statistics.fmean(r["per_type"][t] for r in rs if t in r["per_type"]) for t in types
                },
                "llm_tokens": _mean([r["llm_tokens"] for r in rs]),
                "tower_patches": _mean([r["tower_patches"] for r in rs]),
            }
        )
    return rows


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The aggregated rows as a markdown table, by budget then variant."""
    types = sorted({t for r in rows for t in r["per_type"]})
    head = ["variant", "budget", "SFT LR", "LLM tok/clip", "tower patches", "overall (± spread)", *types]
    cells = [
        [
            r["variant"],
            str(r["budget"]),
            "recipe" if r.get("lr") is None else f"{r['lr']:g}",
            "-" if r["llm_tokens"] is None else f"{r['llm_tokens']:.0f}",
            "-" if r["tower_patches"] is None else f"{r['tower_patches']:.0f}",
            f"{r['accuracy']:.3f} ± {r['spread']:.3f} (n={r['seeds']})",
            *(f"{r['per_type'].get(t, float('nan')):.3f}" for t in types),
        ]
        for r in sorted(rows, key=lambda r: (r["budget"], r["variant"]))
    ]
    return render_table(head, cells, markdown=True)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Held-out accuracy against LLM visual tokens per clip, one line per variant (chance dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
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
    budgets = sorted({r["budget"] for r in rows})
    ax.set_xticks(budgets, [str(b) for b in budgets])  # the budgets run, not powers of two
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: never over a line
    ax.set_title("Towers and input modes at equal visual-token budgets")
    return save_figure(fig, path)


def compare(cfg: CompareConfig, progress: bool = True) -> tuple[list[dict[str, Any]], Path, Path]:
    """Every cell (skipping those already done), then the table (markdown), results.json and the plot."""
    cfg.check()
    tune_b, seed0 = cfg.tuning_budget(), cfg.seeds[0]
    search_cells = (
        [(v, tune_b, seed0, lr) for v in cfg.variants for lr in cfg.lrs] if len(cfg.lrs) > 1 else []
    )
    # seed-major: every budget of the first seed before the second seed
    # (a cut-short run still spans the budgets)
    grid = [(v, b, s) for s in cfg.seeds for b in cfg.budgets for v in cfg.variants]
    for v, b, s, lr in search_cells + [(*c, lr) for c in grid for lr in cfg.lrs]:
        run_overrides(
            cfg, v, b, s, lr
        )  # plan every cell up front: bad settings fail before hours of training
    search = []
    for variant, budget, seed, lr in tqdm(search_cells, desc="LR search", disable=not progress):
        search.append(run_one(cfg, variant, budget, seed, lr))
    chosen = {
        v.name: choose_lr([r for r in search if r["variant"] == v.name]) if search else cfg.lrs[0]
        for v in cfg.variants
    }
    records = []
    bar = tqdm(grid, desc="compare", disable=not progress)
    for variant, budget, seed in bar:
        bar.set_postfix_str(f"{variant.name} b{budget} s{seed}")
        records.append(run_one(cfg, variant, budget, seed, chosen[variant.name]))
    rows = aggregate(records)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.json").write_text(
        json.dumps({"runs": records, "rows": rows, "lr_search": search, "chosen_lr": chosen}, indent=1)
    )
    table = cfg.out / "table.md"
    text = format_table(rows) + "\n"
    if search:
        text += (
            f"\nSFT learning-rate search (budget {tune_b}, seed {seed0}):\n\n"
            f"{format_search(search, chosen)}\n"
        )
    table.write_text(text)
    return rows, table, plot(rows, cfg.out / "accuracy_vs_tokens.png")


__all__ = [
    "ALL_VARIANTS",
    "EXPORT_SCRATCH",
    "PRETRAINED",
    "PRETRAINED_EXPORT",
    "VARIANTS",
    "CompareConfig",
    "Variant",
    "aggregate",
    "choose_lr",
    "compare",
    "format_search",
    "format_table",
    "plot",
    "run_one",
    "run_overrides",
    "tail_loss",
]
