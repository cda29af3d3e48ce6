"""What pretraining bought: an attentive probe (:mod:`llava_ov.experiments.probe`) of the exported encoder
against the same encoder at random init, same probe settings, data and seed, on held-out clips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from encoder.typed_config import load_config
from llava_ov.experiments.probe.config import ProbeConfig
from llava_ov.experiments.probe.run import run_probe
from llava_ov.model import TowerConfig
from llava_ov.pretrain.config import PretrainConfig


def probe_configs(export: Path, cfg: PretrainConfig) -> dict[str, Any]:
    """The probe config of the export (``pretrained``) and of its random-init twin (``random``)."""
    base = load_config(ProbeConfig, None, list(cfg.probe.overrides))
    twin = TowerConfig(
        name="ov_encoder", size=cfg.encoder.size, output_layer=-1, ov_encoder=dict(cfg.encoder.overrides)
    )
    trained = dataclasses.replace(twin, path=str(export), size=cfg.encoder.size, ov_encoder={})
    out = Path(cfg.output_dir) / "pretrain" / "probe"
    return {
        "pretrained": dataclasses.replace(base, tower=trained, name="pretrained", output_dir=str(out)),
        "random": dataclasses.replace(base, tower=twin, name="random_init", output_dir=str(out)),
    }


def probe_export(export: Path, cfg: PretrainConfig, out_file: Path) -> dict[str, Any]:
    results = {name: run_probe(pc) for name, pc in probe_configs(export, cfg).items()}
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
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(summary, indent=1))
    return summary


__all__ = ["probe_configs", "probe_export"]
