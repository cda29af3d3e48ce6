"""OV-Encoder ViT on packed variable-length sequences.

``pixels [N, C, p, p] -> patch embedding -> layernorm_pre -> blocks (3D RoPE, varlen attention)
-> layernorm_post -> per-sequence attention-pooling head``.  No CLS token and, by default, no absolute
position embedding (``abs_pos_embed="sincos3d"`` adds a fixed one); only the given patches are embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .attention import SeqInfo
from .checkpoint import load_pretrained, save_pretrained
from .config import ViTConfig, get_config
from .head import PoolingHead
from .layers import Embeddings, Encoder, make_norm
from .packing import PackedInput, pack_images, pack_selections, pack_videos, validate_packed
from .posembed import sincos3d
from .rope import rope_cos_sin


@dataclass
class EncoderOutput:
    """Outputs on packed tokens; split per sequence with ``cu_seqlens``.

    * ``last_hidden_state`` [N, D]: after ``layernorm_post`` (the last block's output if the model has
      no head); ``None`` when the forward stopped early at ``output_layer``.
    * ``hidden_states`` [N, D]: the state selected by ``output_layer`` (no post-norm), else ``None``.
    * ``pooled`` [B, D]: the attention-pooling head per sequence, else ``None``.
    """

    last_hidden_state: Tensor | None
    hidden_states: Tensor | None
    pooled: Tensor | None
    cu_seqlens: Tensor

    def split(self, x: Tensor) -> list[Tensor]:
        """Split a packed [N, ...] tensor into per-sequence pieces."""
        return list(x.split(torch.diff(self.cu_seqlens).tolist()))


class OVEncoder(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layernorm_pre = make_norm(config)
        self.encoder = Encoder(config)
        self.layernorm_post = make_norm(config) if config.use_head else None
        self.head = PoolingHead(config) if config.use_head else None
        self.init_weights()

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> OVEncoder:
        return cls(get_config(name, **overrides))

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(std=initializer_range) weights, zero biases, unit norms."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # norm weights
                nn.init.ones_(p)
            else:
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.encoder.activation_checkpointing = enabled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------- input path

    def normalize_pixels(self, pixels: Tensor) -> Tensor:
        """uint8 RGB -> (x / 255 - mean) / std in the model's dtype; float input is taken as normalised."""
        dtype = self.embeddings.patch_embedding.weight.dtype
        if pixels.dtype != torch.uint8:
            return pixels.to(dtype)
        c = self.config.num_channels
        mean = torch.tensor(self.config.image_mean, device=pixels.device).view(1, c, 1)
        std = torch.tensor(self.config.image_std, device=pixels.device).view(1, c, 1)
        x = pixels.reshape(pixels.shape[0], c, -1).float() / 255.0
        return ((x - mean) / std).reshape(pixels.shape).to(dtype)

    def _resolve_layer(self, output_layer: int | None) -> int | None:
        if output_layer is None:
            return None
        n = self.config.num_hidden_layers
        if not -(n + 1) <= output_layer <= n:
            raise ValueError(f"output_layer must be in [{-(n + 1)}, {n}] for {n} layers, got {output_layer}")
        return output_layer % (n + 1)

    # ----------------------------------------------------------------- forward

    def forward(
        self,
        pixels: Tensor,
        positions: Tensor,
        cu_seqlens: Tensor,
        *,
        output_layer: int | None = None,
        return_pooled: bool = True,
        validate: bool = True,
    ) -> EncoderOutput:
        """Encode a pack of sequences.

        Args:
            pixels: ``[N, C, p, p]`` or ``[N, C*p*p]``; uint8 (normalised here with the config's
                mean/std) or float (assumed already normalised).
            positions: ``[N, 3]`` integer (t, h, w), t on the ``rope_temporal_size`` grid.
            cu_seqlens: ``[B + 1]`` int32 sequence boundaries.
            output_layer: also return the hidden states after this many blocks, indexed like the
                HF ``hidden_states`` tuple (0 = after ``layernorm_pre``, -1 = last block, -2 = the
                second-to-last block, used by the LMM).  The blocks after it are skipped when nothing
                else needs them (``return_pooled=False`` or no head).
            return_pooled: run ``layernorm_post`` and the pooling head.
            validate: check shapes and values (one host sync); switch off in a trusted hot loop.
        """
        cfg = self.config
        if validate:
            validate_packed(
                pixels,
                positions,
                cu_seqlens,
                patch_size=cfg.patch_size,
                num_channels=cfg.num_channels,
                temporal_size=cfg.rope_temporal_size,
            )
        keep = self._resolve_layer(output_layer)
        full = keep in (None, cfg.num_hidden_layers) or (return_pooled and self.head is not None)
        info = SeqInfo.from_cu_seqlens(cu_seqlens, device=pixels.device)
        cos, sin = rope_cos_sin(
            positions.to(pixels.device), cfg.rope_axis_sizes, cfg.rope_theta, cfg.rope_mode
        )

        x = self.embeddings(self.normalize_pixels(pixels))
        if cfg.abs_pos_embed == "sincos3d":
            x = x + sincos3d(positions.to(x.device), cfg.hidden_size).to(x.dtype)
        x = self.layernorm_pre(x)
        x, kept = self.encoder(
            x, cos, sin, info, cfg.attn_backend, num_layers=None if full else keep, keep=keep
        )
        if not full:
            return EncoderOutput(None, kept, None, info.cu_seqlens)
        pooled = None
        if self.layernorm_post is not None:
            x = self.layernorm_post(x)
            if return_pooled:
                pooled = self.head(x, info)
        return EncoderOutput(x, kept, pooled, info.cu_seqlens)

    def forward_packed(self, packed: PackedInput, **kwargs: Any) -> EncoderOutput:
        device = self.embeddings.patch_embedding.weight.device
        packed = packed.to(device)
        return self(packed.pixels, packed.positions, packed.cu_seqlens, **kwargs)

    def forward_images(self, images: Tensor | Sequence[Tensor], **kwargs: Any) -> EncoderOutput:
        """Images ``[B, C, H, W]`` or a list of ``[C, H, W]`` at native resolution (multiples of p)."""
        return self.forward_packed(pack_images(images, self.config.patch_size), **kwargs)

    def forward_videos(self, videos: Tensor | Sequence[Tensor], **kwargs: Any) -> EncoderOutput:
        """Dense videos ``[B, C, T, H, W]``; frame t maps to ``floor(linspace(0, 63, T))``."""
        packed = pack_videos(videos, self.config.patch_size, self.config.rope_temporal_size)
        return self.forward_packed(packed, **kwargs)

    def forward_selections(self, selections: Sequence[Any], **kwargs: Any) -> EncoderOutput:
        """A list of codec ``PatchSelection``-like objects (``pixels``, ``positions``, ``patch_size``)."""
        return self.forward_packed(pack_selections(selections, self.config.patch_size), **kwargs)

    # ----------------------------------------------------------------- checkpoints

    def save_pretrained(self, directory: str | Path) -> None:
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> OVEncoder:
        return load_pretrained(cls, name_or_path, **overrides)


__all__ = ["EncoderOutput", "OVEncoder"]
