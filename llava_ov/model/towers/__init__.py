"""Vision tower registry: ``TowerConfig.name`` → :class:`TowerEntry` (builder, spec, config check).

To add a tower: write ``towers/<name>.py`` with a :class:`VisionTower` subclass, a builder, a spec
function and a config check (see :mod:`llava_ov.model.towers.base`), and add one entry to
:data:`TOWERS`. Tower modules load on first use (transformers models are not imported for a run that
does not use them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from llava_ov.model.config import TowerConfig
from llava_ov.model.towers.base import ALL_MODES, DENSE_MODES, TowerOutput, TowerSpec, VisionTower


@dataclass(frozen=True)
class TowerEntry:
    """Where a tower lives: ``module`` defines ``build_<name>``, ``spec_<name>``, ``validate_<name>``."""

    name: str
    module: str
    note: str
    merges_itself: bool = False  # its tokens group patches (then the projector must not merge again)

    def _fn(self, kind: str) -> Callable:
        return getattr(importlib.import_module(self.module), f"{kind}_{self.name}")

    def build(self, cfg: TowerConfig) -> VisionTower:
        return self._fn("build")(cfg)

    def spec(self, cfg: TowerConfig) -> TowerSpec:
        return self._fn("spec")(cfg)

    def validate(self, cfg: TowerConfig) -> None:
        self._fn("validate")(cfg)


TOWERS: dict[str, TowerEntry] = {
    "ov_encoder": TowerEntry("ov_encoder", "llava_ov.model.towers.ov_encoder", "OV-Encoder (encoder.model)"),
    "siglip2": TowerEntry("siglip2", "llava_ov.model.towers.siglip2", "SigLIP2 NaFlex (transformers)"),
    "qwen3_vit": TowerEntry(
        "qwen3_vit", "llava_ov.model.towers.qwen3_vit", "Qwen3-VL vision (transformers)", merges_itself=True
    ),
}


def tower_entry(name: str) -> TowerEntry:
    if name not in TOWERS:
        raise ValueError(f"unknown vision tower {name!r}; registered: {sorted(TOWERS)}")
    return TOWERS[name]


def build_tower(cfg: TowerConfig) -> VisionTower:
    """The tower, checked against the spec the data side was planned with (``tower_spec``)."""
    entry = tower_entry(cfg.name)
    tower, promised = entry.build(cfg), entry.spec(cfg)
    if tower.spec != promised:
        raise ValueError(
            f"tower {cfg.name!r} ({cfg.path}) takes {tower.spec}, but its configuration promised "
            f"{promised}: set the tower's patch size / merge overrides to match the checkpoint"
        )
    return tower


def tower_spec(cfg: TowerConfig) -> TowerSpec:
    """The input the configured tower needs, read from its config alone (no weights built)."""
    return tower_entry(cfg.name).spec(cfg)


__all__ = [
    "ALL_MODES",
    "DENSE_MODES",
    "TOWERS",
    "TowerEntry",
    "TowerOutput",
    "TowerSpec",
    "VisionTower",
    "build_tower",
    "tower_entry",
    "tower_spec",
]
