"""The tower registry: ``TowerConfig.name`` → the :class:`Tower` object its module defines.

Each tower module (``ov_encoder``, ``siglip2``, ``qwen3_vit``) defines one ``TOWER``: its name, its
options dataclass (the keys of its ``model.tower.<name>`` section), what it takes (``spec``, from the
config alone), the check run when a run config loads (``validate``) and the builder. Adding a tower is
one such module and one line in :data:`TOWERS` (``TowerConfig`` gets its section from here); the tests
are parametrised over :data:`TOWERS`.
"""

from __future__ import annotations

from llava_ov.model.towers import ov_encoder, qwen3_vit, siglip2
from llava_ov.model.towers.base import Tower, TowerSpec, VisionTower

TOWERS: dict[str, Tower] = {t.name: t for t in (ov_encoder.TOWER, siglip2.TOWER, qwen3_vit.TOWER)}


def tower_entry(name: str) -> Tower:
    if name not in TOWERS:
        raise ValueError(f"unknown vision tower {name!r}; registered: {sorted(TOWERS)}")
    return TOWERS[name]


def build_tower(cfg) -> VisionTower:
    """The tower of ``cfg`` (a :class:`~llava_ov.model.towers.config.TowerConfig`), checked against the
    spec the data side was planned with (:func:`tower_spec`)."""
    entry = tower_entry(cfg.name)
    tower, promised = entry.build(cfg), entry.spec(cfg)
    if tower.spec != promised:
        raise ValueError(
            f"tower {cfg.name!r} ({cfg.path}) takes {tower.spec}, but its configuration promised "
            f"{promised}: set the tower's patch size / merge overrides to match the checkpoint"
        )
    return tower


def tower_spec(cfg) -> TowerSpec:
    """The input the configured tower needs, read from its config alone (no weights built)."""
    return tower_entry(cfg.name).spec(cfg)


__all__ = ["TOWERS", "build_tower", "tower_entry", "tower_spec"]
