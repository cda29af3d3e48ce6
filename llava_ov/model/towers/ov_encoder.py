"""OV-Encoder as the LMM's vision tower (the hidden states of ``output_layer``, no pooling head)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from encoder.model import OVEncoder, ViTConfig, get_config, read_config
from encoder.typed_config import ConfigError
from llava_ov.data.dataset import MediaBatch
from llava_ov.model.towers.base import (
    ALL_MODES,
    Tower,
    TowerOutput,
    TowerSpec,
    VisionTower,
    is_local,
    patch_output,
)

if TYPE_CHECKING:
    from llava_ov.model.towers.config import TowerConfig

RELEASED_PATCH = 14  # lmms-lab-encoder/onevision-encoder-*


class OVEncoderTower(VisionTower):
    def __init__(self, encoder: OVEncoder, output_layer: int = -2) -> None:
        super().__init__()
        self.encoder = encoder
        self.output_layer = output_layer
        self.layer_index = encoder._resolve_layer(output_layer)  # validates the range once
        self.freeze_unused()

    @property
    def spec(self) -> TowerSpec:
        return TowerSpec(self.encoder.config.patch_size, modes=ALL_MODES)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    def forward(self, media: MediaBatch) -> TowerOutput:
        self.check_media(media)
        device = self.device
        out = self.encoder(
            media.pixels.to(device, non_blocking=True),
            media.positions.to(device, non_blocking=True),
            media.cu_seqlens.to(device, non_blocking=True),
            output_layer=self.output_layer,
            return_pooled=False,
        )
        return patch_output(out.hidden_states, media)

    def save_pretrained(self, directory: str | Path) -> None:
        self.encoder.save_pretrained(directory)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.encoder.set_activation_checkpointing(enabled)

    def blocks(self) -> list[nn.Module]:
        return list(self.encoder.encoder.layers)

    def attention_width(self) -> int:
        return self.layer_index * self.encoder.config.hidden_size

    def unused_parameter_names(self) -> list[str]:
        """Blocks after ``output_layer``, the post-norm and the pooling head."""
        used_blocks = self.layer_index
        unused = []
        for name, _ in self.named_parameters():
            parts = name.split(
                "."
            )  # encoder.encoder.layers.{i}.… / encoder.head.… / encoder.layernorm_post.…
            if parts[1] in ("head", "layernorm_post"):
                unused.append(name)
            elif parts[1:3] == ["encoder", "layers"] and int(parts[3]) >= used_blocks:
                unused.append(name)
        return unused


def spec_ov_encoder(cfg: TowerConfig) -> TowerSpec:
    """Patch 14 (the released and every preset encoder); any input mode, one token per patch. A local
    folder's config is read; a hub id is not fetched for this (the built tower is checked against it)."""
    if is_local(cfg.path):
        return TowerSpec(read_config(cfg.path, **cfg.options).patch_size, modes=ALL_MODES)
    if cfg.path is not None:
        return TowerSpec(RELEASED_PATCH, modes=ALL_MODES)
    return TowerSpec(get_config(cfg.size, **dict(cfg.options)).patch_size, modes=ALL_MODES)


def validate_ov_encoder(cfg: TowerConfig) -> None:
    """The named size and the encoder overrides are checked strictly (unknown keys are errors)."""
    if cfg.path is None:
        try:
            get_config(cfg.size, **dict(cfg.options))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"model.tower (ov_encoder): {e}") from None


def build_ov_encoder(cfg: TowerConfig) -> OVEncoderTower:
    """Pretrained weights from ``cfg.path`` (hub id or folder), else a random ``cfg.size`` encoder."""
    overrides = dict(cfg.options)
    if cfg.path is not None:
        encoder = OVEncoder.from_pretrained(cfg.path, **overrides)
    else:
        encoder = OVEncoder(get_config(cfg.size, **overrides))
    return OVEncoderTower(encoder, cfg.output_layer)


#: The options are :class:`~encoder.model.ViTConfig` fields, set over the preset / checkpoint config.
TOWER = Tower(
    "ov_encoder",
    "OV-Encoder (encoder.model)",
    ViTConfig,
    spec_ov_encoder,
    validate_ov_encoder,
    build_ov_encoder,
)


__all__ = ["TOWER", "OVEncoderTower", "build_ov_encoder", "spec_ov_encoder", "validate_ov_encoder"]
