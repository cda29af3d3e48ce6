"""The vision tower section of a model config (``model.tower`` in a run config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from encoder.typed_config import Partial, check_partial
from llava_ov.model.towers.registry import TOWERS, tower_entry


def _with_tower_sections(cls: type) -> type:
    """``cls`` as a dataclass with, after its own fields, one section per registered tower, named after
    it: ``<name>: Partial[<the tower's options>]`` (``{}`` by default). Registering a tower adds its
    section ``model.tower.<name>``; there is no field to add here."""
    for name, tower in TOWERS.items():
        if name in cls.__annotations__:
            raise TypeError(f"tower name {name!r} clashes with a TowerConfig field")
        cls.__annotations__[name] = Partial[tower.options]
        setattr(cls, name, field(default_factory=dict))
    return dataclass(cls)


@_with_tower_sections
class TowerConfig:
    """Vision tower. ``name`` is a key of :data:`llava_ov.model.towers.TOWERS`.

    Per-tower settings: one section per registered tower (``ov_encoder: {rope_mode: clean}``), each
    the tower's own options (``Tower.options``) typed and checked strictly when the run config merges
    it, and used only while that tower is the active one, so a run config can carry the settings of
    several towers and ``model.tower.name=...`` alone swaps them."""

    name: str = "ov_encoder"
    path: str | None = None  # hub id or local dir of pretrained weights; None = random init of `size`
    size: str = "debug"  # named size of the tower when path is None (each tower has a "debug" preset)
    # options of the active tower over its section (e.g. attn_backend); which keys are valid depends on
    # `name`, so the active tower's check (validate) holds them to its options
    overrides: dict = field(default_factory=dict)
    output_layer: int = -2  # hidden states of the second-to-last block feed the projector

    @property
    def options(self) -> dict:
        """The active tower's config overrides: its own section, then ``overrides`` on top."""
        return {**getattr(self, self.name, {}), **self.overrides}

    def validate(self) -> None:
        """The name and the active tower's settings (its module's check), then every tower section
        against its tower's options (those of a config built in Python: merging checked the others)."""
        tower_entry(self.name).validate(self)
        for name, tower in TOWERS.items():
            check_partial(tower.options, getattr(self, name), f"model.tower.{name}")


__all__ = ["TowerConfig"]
