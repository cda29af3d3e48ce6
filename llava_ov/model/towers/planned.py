"""Registered names of towers that are planned but not implemented yet."""

from __future__ import annotations

from collections.abc import Callable

from llava_ov.model.config import TowerConfig
from llava_ov.model.towers.base import VisionTower


def planned_tower(name: str, note: str) -> Callable[[TowerConfig], VisionTower]:
    def build(cfg: TowerConfig) -> VisionTower:
        raise NotImplementedError(
            f"vision tower {name!r} is planned but not implemented yet ({note}); use tower.name='ov_encoder'"
        )

    build.__name__ = f"build_{name}"
    return build


__all__ = ["planned_tower"]
