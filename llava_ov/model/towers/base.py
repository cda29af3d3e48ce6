"""The interface every vision tower implements for the LMM.

A tower maps the packed media of a batch (:class:`llava_ov.data.MediaBatch`: uint8 patches, (t, h, w)
positions, ``cu_seqlens`` per media item) to one feature vector per patch, in the same order. Adding a
tower = one file with a :class:`VisionTower` subclass and a builder, plus an entry in
:data:`llava_ov.model.towers.TOWERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import Tensor, nn

from llava_ov.data.dataset import MediaBatch


class VisionTower(nn.Module, ABC):
    """Packed media → per-patch features ``[N, hidden_size]``."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the features the projector receives (before any spatial merge)."""

    @property
    @abstractmethod
    def patch_size(self) -> int:
        """Pixel size p of the square patches the tower expects."""

    @abstractmethod
    def forward(self, media: MediaBatch) -> Tensor:
        """Features of every patch of ``media``, ``[media.num_patches, hidden_size]``, in media order."""

    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> None:
        """Write weights + config so that the builder reloads them with ``TowerConfig.path=directory``."""

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute the blocks in backward (non-reentrant). Towers without blocks may ignore it."""

    def unused_parameter_names(self) -> list[str]:
        """Parameters the LMM never uses (e.g. blocks after ``output_layer``); kept frozen."""
        return []

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


__all__ = ["VisionTower"]
