"""Vision towers: the contract (:mod:`~llava_ov.model.towers.base`), the config section
(:mod:`~llava_ov.model.towers.config`), one module per tower and the registry
(:mod:`~llava_ov.model.towers.registry`: ``TowerConfig.name`` → the module's :class:`Tower`)."""

from llava_ov.model.towers.base import ALL_MODES, DENSE_MODES, Tower, TowerOutput, TowerSpec, VisionTower
from llava_ov.model.towers.config import TowerConfig
from llava_ov.model.towers.registry import TOWERS, build_tower, tower_entry, tower_spec

__all__ = [
    "ALL_MODES",
    "DENSE_MODES",
    "TOWERS",
    "Tower",
    "TowerConfig",
    "TowerOutput",
    "TowerSpec",
    "VisionTower",
    "build_tower",
    "tower_entry",
    "tower_spec",
]
