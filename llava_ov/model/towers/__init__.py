"""Vision tower registry: ``TowerConfig.name`` → builder ``(TowerConfig) -> VisionTower``.

To add a tower: write ``towers/<name>.py`` with a :class:`VisionTower` subclass and a builder, and
add one entry to :data:`TOWERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from llava_ov.model.config import TowerConfig
from llava_ov.model.towers.base import VisionTower
from llava_ov.model.towers.ov_encoder import OVEncoderTower, build_ov_encoder
from llava_ov.model.towers.planned import planned_tower

TowerBuilder = Callable[[TowerConfig], VisionTower]

TOWERS: dict[str, TowerBuilder] = {
    "ov_encoder": build_ov_encoder,
    "siglip2": planned_tower("siglip2", "SigLIP2 NaFlex via transformers"),
    "qwen3_vit": planned_tower("qwen3_vit", "the Qwen3-VL vision encoder"),
}


def build_tower(cfg: TowerConfig) -> VisionTower:
    if cfg.name not in TOWERS:
        raise ValueError(f"unknown vision tower {cfg.name!r}; registered: {sorted(TOWERS)}")
    return TOWERS[cfg.name](cfg)


__all__ = ["TOWERS", "OVEncoderTower", "TowerBuilder", "VisionTower", "build_tower"]
