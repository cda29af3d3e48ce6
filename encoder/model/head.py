"""Attention-pooling head evaluated per sequence of a pack.

A learned probe ``[1, 1, D]`` attends over each sequence's tokens (multi-head attention with the
parameter layout of ``nn.MultiheadAttention``: ``in_proj_weight`` [3D, D], ``in_proj_bias`` [3D],
``out_proj``), then ``x = x + mlp(rms_norm(x))`` (the released head: the residual is taken around the
MLP only, from the attention output, and there is no norm before the attention).

The probe is a single query shared by all sequences, so attention is one score per (token, head);
the per-sequence softmax is a segment softmax (scatter max / index_add), in fp32, with no padding
and no Python loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import SeqInfo
from .config import ViTConfig
from .layers import MLP


class ProbeAttention(nn.Module):
    """Multi-head attention of one query over each sequence of a pack (``nn.MultiheadAttention`` names)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)

    def forward(self, query: Tensor, x: Tensor, info: SeqInfo) -> Tensor:
        """``query`` [D] and packed tokens ``x`` [N, D] -> one pooled vector per sequence [B, D]."""
        d, h, hd = x.shape[-1], self.num_heads, self.head_dim
        w_q, w_kv = self.in_proj_weight.split([d, 2 * d])
        b_q, b_kv = self.in_proj_bias.split([d, 2 * d])
        q = F.linear(query, w_q, b_q).view(h, hd)
        k, v = F.linear(x, w_kv, b_kv).view(-1, 2, h, hd).unbind(1)
        with torch.autocast(x.device.type, enabled=False):  # scores, softmax and pooling in fp32
            q, k, v = q.float(), k.float(), v.float()
            scores = (k * q).sum(-1) * hd**-0.5  # [N, H]
            weights = segment_softmax(scores, info.seq_ids, info.num_seqs)
            pooled = scores.new_zeros(info.num_seqs, h, hd).index_add_(
                0, info.seq_ids, weights[..., None] * v
            )
        return self.out_proj(pooled.reshape(info.num_seqs, d).to(x.dtype))


def segment_softmax(scores: Tensor, seg: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``scores`` [N, H] over the tokens of each segment (``seg`` [N] in [0, num_segments))."""
    idx = seg[:, None].expand_as(scores)
    init = scores.new_full((num_segments, scores.shape[1]), float("-inf"))
    seg_max = init.scatter_reduce(0, idx, scores.detach(), "amax", include_self=True)
    e = (scores - seg_max[seg]).exp()
    denom = scores.new_zeros(num_segments, scores.shape[1]).index_add_(0, seg, e)
    return e / denom[seg]


class PoolingHead(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, cfg.hidden_size))
        self.attention = ProbeAttention(cfg)
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, info: SeqInfo) -> Tensor:
        """Packed tokens [N, D] -> pooled [B, D]."""
        pooled = self.attention(self.probe.reshape(-1).to(x.dtype), x, info)
        pooled = pooled.to(self.norm.weight.dtype)  # under autocast out_proj returns half precision
        return pooled + self.mlp(self.norm(pooled))


__all__ = ["PoolingHead", "ProbeAttention", "segment_softmax"]
