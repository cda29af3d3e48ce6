"""The contract every vision tower implements for the LMM.

A tower says what input it needs (:class:`TowerSpec`: patch size, frames per token, the spatial merge it
applies itself, the codec input modes it takes) and maps the packed media of a batch
(:class:`llava_ov.data.MediaBatch`: uint8 patches, (t, h, w) positions, ``cu_seqlens`` per media item)
to a :class:`TowerOutput`: one feature row per *tower token* (a patch, or a tubelet / merged block
for towers that reduce their input), with that token's (t, h, w) and offsets per media item. The
projector then applies its own optional 2×2 merge on those tokens. The data side counts the LLM
tokens of a media item with :class:`llava_ov.model.merge.TokenCounter` built from the same spec, so the
placeholders always match.

Adding a tower = one module with a :class:`VisionTower` subclass and its :class:`Tower` (``TOWER``: its
options dataclass, a builder, a spec function that needs no weights, a config check run when the run
config loads), plus one line in :data:`llava_ov.model.towers.registry.TOWERS`; its options section
``model.tower.<name>`` then exists (``TowerConfig`` makes one per registered tower).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from llava_ov.data.dataset import MediaBatch
from llava_ov.model.merge import TokenCounter

DENSE_MODES = ("frames", "collage", "image")  # every patch of each frame
ALL_MODES = ("codec", "random", *DENSE_MODES)


@dataclass(frozen=True)
class TowerSpec:
    """What a tower consumes and how its tokens relate to the patches it is given."""

    patch_size: int
    frames_per_token: int = 1  # tubelet depth: 2 for Qwen3-ViT (two consecutive frames per token)
    merge: int = 1  # spatial merge inside the tower: 2 for Qwen3-ViT's merger (2×2 patches per token)
    modes: tuple[str, ...] = DENSE_MODES  # codec input modes it accepts

    @property
    def reduces(self) -> bool:
        """True when a tower token covers more than one patch (tubelets or an own merge)."""
        return self.frames_per_token > 1 or self.merge > 1

    def token_counter(self, projector_merge: int = 1) -> TokenCounter:
        """The picklable rule that turns a selection into this tower's LLM-token count (no weights)."""
        return TokenCounter(projector_merge, self.frames_per_token, self.merge)

    def unit(self, projector_merge: int = 1) -> int:
        """Pixel side of the square one LLM token covers in one frame group."""
        return self.patch_size * self.merge * projector_merge


@dataclass
class TowerOutput:
    features: Tensor  # [M, hidden_size]: one row per tower token, media order
    positions: Tensor  # int [M, 3]: (t, h, w) of each token on the tower's token grid
    cu_seqlens: Tensor  # int32 [B + 1]: token offsets per media item

    @property
    def counts(self) -> list[int]:
        return torch.diff(self.cu_seqlens).tolist()


class VisionTower(nn.Module, ABC):
    """Packed media → :class:`TowerOutput` (see the module docstring)."""

    @property
    @abstractmethod
    def spec(self) -> TowerSpec:
        """The input the tower needs (equal to its module's spec function of the config)."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the features the projector receives (before the projector's merge)."""

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @abstractmethod
    def forward(self, media: MediaBatch) -> TowerOutput:
        """Tower tokens of ``media``, in media order."""

    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> None:
        """Write weights + config so that the builder reloads them with ``TowerConfig.path=directory``."""

    def check_media(self, media: MediaBatch) -> None:
        if media.patch_size != self.patch_size:
            raise ValueError(f"media patch size {media.patch_size} != tower patch size {self.patch_size}")

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute the blocks in backward (non-reentrant). Towers without blocks may ignore it."""

    def unused_parameter_names(self) -> list[str]:
        """Parameters the LMM never uses (e.g. blocks after ``output_layer``); kept frozen."""
        return []

    def blocks(self) -> list[nn.Module]:
        """The repeated transformer blocks (each compiled on its own with ``model.compile``)."""
        return []

    def attention_width(self) -> int:
        """Σ over the attention blocks whose output is used of heads × head_dim (the quadratic term of
        :mod:`llava_ov.train.flops`); 0 leaves the tower's attention out of the FLOP count."""
        return 0

    def freeze_unused(self) -> None:
        unused = set(self.unused_parameter_names())
        for name, p in self.named_parameters():
            if name in unused:
                p.requires_grad_(False)

    def requires_grad_(self, requires_grad: bool = True) -> VisionTower:
        super().requires_grad_(requires_grad)
        self.freeze_unused()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


@dataclass(frozen=True)
class Tower:
    """A tower as the registry knows it (one per tower module, its ``TOWER``): the dataclass of its
    options (the keys its section ``model.tower.<name>`` and ``overrides`` may set: a
    ``Partial[options]``, typed and checked strictly when a run config merges it) and the functions of
    a :class:`~llava_ov.model.towers.config.TowerConfig` that give its spec (no weights), check its
    settings when a run config loads, and build it."""

    name: str
    note: str
    options: type
    spec: Callable[[Any], TowerSpec]
    validate: Callable[[Any], None]
    build: Callable[[Any], VisionTower]
    merges_itself: bool = False  # its tokens group patches (then the projector must not merge again)


def is_local(path: str | None) -> bool:
    """A checkpoint folder on this machine (its config can be read without the hub)."""
    return path is not None and Path(path).is_dir()


def patch_output(features: Tensor, media: MediaBatch) -> TowerOutput:
    """The output of a tower whose tokens are its input patches (no reduction)."""
    return TowerOutput(features, media.positions, media.cu_seqlens)


__all__ = [
    "ALL_MODES",
    "DENSE_MODES",
    "Tower",
    "TowerOutput",
    "TowerSpec",
    "VisionTower",
    "is_local",
    "patch_output",
]
