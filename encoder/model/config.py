"""Typed configuration of the OV-Encoder ViT.

Field names follow the released checkpoint's ``config.json`` where one exists (``hidden_size``,
``num_hidden_layers``, ...), so that mapping a released config is an identity for those keys.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from encoder.typed_config import ConfigError, check_choices

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

NormType = Literal["layer_norm", "rms_norm"]
RopeMode = Literal["compatible", "clean"]
AbsPosEmbed = Literal["none", "sincos3d"]
AttnBackend = Literal["auto", "flash", "torch_varlen", "sdpa_loop", "sdpa_mask"]

ATTN_BACKENDS: tuple[str, ...] = typing.get_args(AttnBackend)


@dataclass
class ViTConfig:
    """Architecture and runtime options of the encoder.

    ``rope_mode="compatible"`` reproduces the released RoPE rule bit for bit (use it to load released
    weights); ``"clean"`` is a true per-pair rotation, for training from scratch.
    ``abs_pos_embed="sincos3d"`` adds a fixed sin-cos embedding of each patch's (t, h, w) to the patch
    embedding (not in the released design, which has relative RoPE only): with it every token knows where
    and when it is, which a small encoder trained from scratch needs to learn motion direction quickly.
    """

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 14
    num_channels: int = 3
    image_size: int = 448
    hidden_act: str = "gelu"
    layer_norm_type: NormType = "layer_norm"
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_temporal_size: int = 64
    rope_split: tuple[int, int, int] = (4, 6, 6)
    rope_mode: RopeMode = "compatible"
    abs_pos_embed: AbsPosEmbed = "none"
    use_head: bool = True
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    attn_backend: AttnBackend = "auto"
    activation_checkpointing: bool = False
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        self.rope_split = tuple(int(s) for s in self.rope_split)  # type: ignore[assignment]
        self.image_mean = tuple(float(m) for m in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(s) for s in self.image_std)  # type: ignore[assignment]
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rope_axis_sizes(self) -> tuple[int, int, int]:
        """Number of rotary frequencies for (t, h, w); they sum to head_dim // 2."""
        half = self.head_dim // 2
        total = sum(self.rope_split)
        t, h, _ = (half * s // total for s in self.rope_split)
        return t, h, half - t - h

    def validate(self) -> None:
        """The choices (``Literal`` fields), then the rules between fields; ConfigError."""
        check_choices(self)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        half = self.head_dim // 2
        total = sum(self.rope_split)
        if len(self.rope_split) != 3 or any(s <= 0 for s in self.rope_split):
            raise ConfigError(f"rope_split must be three positive ints, got {self.rope_split}")
        if self.head_dim % 2 or any((half * s) % total for s in self.rope_split):
            raise ConfigError(
                f"head_dim {self.head_dim} cannot be split {self.rope_split} over t/h/w "
                f"(head_dim/2 = {half} must be a multiple of {total})"
            )
        if self.hidden_act != "gelu":
            raise ConfigError(f"only exact GELU ('gelu') is supported, got hidden_act={self.hidden_act!r}")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ConfigError("image_mean / image_std must have one value per channel")
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f"image_std must be positive, got {self.image_std}")
        if self.rope_temporal_size <= 0 or self.patch_size <= 0:
            raise ConfigError("rope_temporal_size and patch_size must be positive")

    def replace(self, **overrides: Any) -> ViTConfig:
        """A copy with some fields changed; unknown keys raise ``ConfigError``."""
        _check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("rope_split", "image_mean", "image_std"):
            d[k] = list(d[k])
        return d


def _check_keys(overrides: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown ViTConfig field(s) {unknown}; valid fields: {sorted(known)}")


PRESETS: dict[str, dict[str, Any]] = {
    "debug": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120),
}


def get_config(name: str = "large", **overrides: Any) -> ViTConfig:
    """Config preset by name (``debug``, ``base``, ``large``, ``huge``) with field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown config name {name!r}; choose one of {sorted(PRESETS)}")
    _check_keys(overrides)
    return ViTConfig(**{**PRESETS[name], **overrides})


def config_from_dict(d: dict[str, Any]) -> ViTConfig:
    """Inverse of :meth:`ViTConfig.to_dict` (strict: unknown keys raise)."""
    _check_keys(d)
    return ViTConfig(**d)


__all__ = [
    "ATTN_BACKENDS",
    "CLIP_MEAN",
    "CLIP_STD",
    "PRESETS",
    "ViTConfig",
    "config_from_dict",
    "get_config",
]
