"""What pretraining bought: attentive probes (:mod:`llava_ov.experiments.probe`) of the exported encoder
against the same encoder at random init, same probe settings, data and seed, on held-out clips; one probe
per synthetic task of ``probe.tasks`` (``direction``: what moves where; ``color``: what a still object
looks like, so a pretraining that trades appearance for motion shows)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from encoder.typed_config import merge_config
from llava_ov.experiments.probe.config import ProbeConfig
from llava_ov.experiments.probe.run import run_probe
from llava_ov.model import TowerConfig
from llava_ov.pretrain.config import PretrainConfig
from llava_ov.report import format_table


def probe_configs(export: Path, cfg: PretrainConfig, task: str | None = None) -> dict[str, Any]:
    """The probe config of the export (``pretrained``) and of its random-init twin (``random``) for one
    synthetic ``task`` (None: the probe config's own); another task's clips get their own cache folder."""
    base = merge_config(ProbeConfig(), cfg.probe.config)
    if task is not None and task != base.synthetic.task:
        root = Path(base.synthetic.out_dir)
        out_dir = str(root.with_name(f"{root.name}_{task}"))
        base = dataclasses.replace(
            base, synthetic=dataclasses.replace(base.synthetic, task=task, out_dir=out_dir)
        )
    twin = TowerConfig(
        name="ov_encoder", size=cfg.encoder.size, output_layer=-1, ov_encoder=dict(cfg.encoder.overrides)
    )
    trained = dataclasses.replace(twin, path=str(export), size=cfg.encoder.size, ov_encoder={})
    out = Path(cfg.output_dir) / "pretrain" / "probe" / base.synthetic.task
    return {
        "pretrained": dataclasses.replace(base, tower=trained, name="pretrained", output_dir=str(out)),
        "random": dataclasses.replace(base, tower=twin, name="random_init", output_dir=str(out)),
    }


def probe_export(export: Path, cfg: PretrainConfig, out_file: Path) -> dict[str, Any]:
    """Every task of ``cfg.probe.tasks``: ``{"tasks": {task: {pretrained, random, chance, classes}}}``,
    written to ``out_file``."""
    tasks = {}
    for task in cfg.probe.tasks:
        results = {name: run_probe(pc) for name, pc in probe_configs(export, cfg, task).items()}
        summary = {
            name: {
                "accuracy": r["top1"],
                "per_class": r["per_class"],
                "train_accuracy": r["train_top1"],
                "n_heldout": r["n_heldout"],
            }
            for name, r in results.items()
        }
        summary["chance"] = results["random"]["chance"]
        summary["classes"] = results["random"]["classes"]
        tasks[task] = summary
    out = {"tasks": tasks}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(out, indent=1))
    return out


def format_probe_table(summary: dict[str, Any]) -> str:
    """One row per probe task: pretrained vs random init held-out top-1 (train top-1), chance."""
    rows = [
        [
            task,
            f"{r['pretrained']['accuracy']:.3f} ({r['pretrained']['train_accuracy']:.3f})",
            f"{r['random']['accuracy']:.3f} ({r['random']['train_accuracy']:.3f})",
            f"{r['chance']:.3f}",
        ]
        for task, r in summary["tasks"].items()
    ]
    head = ["probe task", "pretrained held-out (train)", "random init held-out (train)", "chance"]
    return format_table(head, rows)


__all__ = ["format_probe_table", "probe_configs", "probe_export"]
