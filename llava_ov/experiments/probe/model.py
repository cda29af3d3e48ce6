"""The attentive probe: one learned query pools each clip's tower tokens, then LayerNorm → Linear.

Clips are packed like the towers' input (tokens ``[N, D]`` of several clips back to back, ``seq_ids``
saying which clip each token is from), so a batch of clips of different lengths needs no padding.
The pooling is multi-head attention of a single learned query over the layer-normed tokens of each
clip (the per-clip softmax is :func:`encoder.model.head.segment_softmax`, in fp32), computed in an
exactly equivalent cheaper order: with one query, head ``h``'s score of token ``x`` is
``q_h · (W_k,h x) = (W_k,hᵀ q_h) · x`` and its output is ``W_v,h (Σ_i a_ih x_i) + b_v,h``, so the
per-token work is ``N · H · D`` instead of the ``N · 2D²`` of projecting every token to keys and
values (the key bias shifts all scores of a head equally and is dropped; the token LayerNorm has no
affine part, which the projections absorb). Training on cached tower tokens is then cheap on CPU.

(:class:`encoder.model.head.ProbeAttention` computes the same pooling the direct way and takes an
OV-Encoder ``ViTConfig``, whose RoPE checks reject widths such as 48 (Qwen3-ViT ``debug``), so the probe
keeps its own projections and reuses the segment softmax.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoder.model.head import segment_softmax
from encoder.model.posembed import sincos3d


class AttentiveProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int, heads: int = 4, pos_embed: str = "none") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"probe heads ({heads}) must divide the tower's width ({dim})")
        self.dim, self.heads, self.pos_embed = dim, heads, pos_embed
        self.query = nn.Parameter(torch.empty(dim))
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.query, std=0.02)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.classifier):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def tokens(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """The probe's view of the tower tokens: LayerNorm (no affine), plus the position embedding."""
        x = F.layer_norm(x.float(), (self.dim,))
        if self.pos_embed == "sincos3d":
            if positions is None:
                raise ValueError("pos_embed=sincos3d needs the tokens' positions")
            x = x + sincos3d(positions, self.dim).to(x)
        return x

    def pool(self, x: Tensor, seq_ids: Tensor, num_seqs: int, positions: Tensor | None = None) -> Tensor:
        """Tokens ``[N, D]`` of ``num_seqs`` clips → one pooled vector per clip ``[B, D]``."""
        h, hd, d = self.heads, self.dim // self.heads, self.dim
        x = self.tokens(x, positions)
        q = self.q_proj(self.query).view(h, hd)
        key_dirs = torch.einsum("hc,hcd->hd", q, self.k_proj.weight.view(h, hd, d))  # [H, D]
        weights = segment_softmax(x @ key_dirs.T * hd**-0.5, seq_ids, num_seqs)  # [N, H]
        mixed = x.new_zeros(num_seqs, h, d).index_add_(0, seq_ids, weights[..., None] * x[:, None, :])
        values = torch.einsum("bhd,hcd->bhc", mixed, self.v_proj.weight.view(h, hd, d))
        values = values + self.v_proj.bias.view(h, hd)
        return self.out_proj(values.reshape(num_seqs, d))

    def forward(self, x: Tensor, seq_ids: Tensor, num_seqs: int, positions: Tensor | None = None) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.classifier(self.norm_out(self.pool(x, seq_ids, num_seqs, positions)))


__all__ = ["AttentiveProbe"]
