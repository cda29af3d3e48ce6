"""The vision tower section of a model config (``model.tower`` in a run config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_ov.model.towers.registry import tower_entry


@dataclass
class TowerConfig:
    """Vision tower. ``name`` is a key of :data:`llava_ov.model.towers.TOWERS`."""

    name: str = "ov_encoder"
    path: str | None = None  # hub id or local dir of pretrained weights; None = random init of `size`
    size: str = "debug"  # named size of the tower when path is None (each tower has a "debug" preset)
    overrides: dict = field(default_factory=dict)  # config overrides of the active tower (e.g. attn_backend)
    output_layer: int = -2  # hidden states of the second-to-last block feed the projector
    # Per-tower settings, used only while that tower is the active one, so a run config can carry the
    # settings of several towers and `model.tower.name=...` alone swaps them (each checked strictly
    # against its tower's config class when the run config loads).
    ov_encoder: dict = field(default_factory=dict)
    siglip2: dict = field(default_factory=dict)
    qwen3_vit: dict = field(default_factory=dict)

    @property
    def options(self) -> dict:
        """The active tower's config overrides: its own section, then ``overrides`` on top."""
        return {**getattr(self, self.name, {}), **self.overrides}

    def validate(self) -> None:
        """The name, and the tower's own settings (its module's check), when the run config loads."""
        tower_entry(self.name).validate(self)


__all__ = ["TowerConfig"]
