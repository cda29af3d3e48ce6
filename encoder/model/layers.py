"""Building blocks of the ViT, on packed tokens ``[N_total, D]``.

Module attribute names are chosen so that the parameter names ARE the released checkpoint's names
(``embeddings.patch_embedding.weight``, ``encoder.layers.{i}.self_attn.q_proj.weight``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import SeqInfo, varlen_attention
from .config import ViTConfig
from .rope import apply_rope


def make_norm(cfg: ViTConfig) -> nn.Module:
    if cfg.layer_norm_type == "rms_norm":
        return nn.RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class PatchEmbedding(nn.Module):
    """No-bias Conv2d(C, D, p, stride p) applied to pre-cut patches, i.e. a linear map.

    The weight keeps the Conv2d shape ``[D, C, p, p]`` so released weights load unchanged; on a
    patch ``[C, p, p]`` the convolution is exactly ``weight.flatten(1) @ patch.flatten()``.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        p = cfg.patch_size
        self.weight = nn.Parameter(torch.empty(cfg.hidden_size, cfg.num_channels, p, p))

    def forward(self, patches: Tensor) -> Tensor:
        """``[N, C, p, p]`` or ``[N, C*p*p]`` float patches -> ``[N, D]``."""
        return F.linear(patches.reshape(patches.shape[0], -1), self.weight.flatten(1))


class Embeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_embedding = PatchEmbedding(cfg)

    def forward(self, patches: Tensor) -> Tensor:
        return self.patch_embedding(patches)


class MLP(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, info: SeqInfo, backend: str) -> Tensor:
        n = x.shape[0]
        shape = (n, self.num_heads, self.head_dim)
        q = apply_rope(self.q_proj(x).view(shape), cos, sin)
        k = apply_rope(self.k_proj(x).view(shape), cos, sin)
        v = self.v_proj(x).view(shape)
        out = varlen_attention(q, k, v, info, backend)
        return self.out_proj(out.reshape(n, -1))


class EncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN1(x)), then x + mlp(LN2(x))."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layer_norm1 = make_norm(cfg)
        self.self_attn = SelfAttention(cfg)
        self.layer_norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, info: SeqInfo, backend: str) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), cos, sin, info, backend)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.activation_checkpointing = cfg.activation_checkpointing

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        info: SeqInfo,
        backend: str,
        num_layers: int | None = None,
        keep: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Run the first ``num_layers`` blocks (all by default).

        Returns the final state and the state after ``keep`` blocks (``keep = 0``: the input), if asked.
        """
        num_layers = len(self.layers) if num_layers is None else num_layers
        kept = x if keep == 0 else None
        use_ckpt = self.activation_checkpointing and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers[:num_layers]):
            if use_ckpt:
                x = checkpoint(layer, x, cos, sin, info, backend, use_reentrant=False)
            else:
                x = layer(x, cos, sin, info, backend)
            if keep == i + 1:
                kept = x
        return x, kept


__all__ = ["MLP", "Embeddings", "Encoder", "EncoderLayer", "PatchEmbedding", "SelfAttention", "make_norm"]
