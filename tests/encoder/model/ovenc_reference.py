"""A deliberately plain, dense re-implementation of the encoder from the reference notes (§1-2).

It works directly on a state dict with the released parameter names and shares no code with
``encoder.model``: conv2d patch embedding over full frames, its own RoPE (per-axis inverse
frequencies, [t|h|w] concatenation, cat([f, f]) duplication, interleaved rotate-half), explicit
softmax attention, and the head through ``F.multi_head_attention_forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def ref_rope_angles(pos: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """[L, 3] (t, h, w) -> [L, head_dim] angles, released rule: cat([f, f]) of [t | h | w]."""
    half = head_dim // 2
    n_t, n_h = half * 4 // 16, half * 6 // 16
    sizes = [n_t, n_h, half - n_t - n_h]
    parts = []
    for axis, n in enumerate(sizes):
        inv = torch.tensor([theta ** (-i / n) for i in range(n)], dtype=torch.float64)
        parts.append(pos[:, axis].double()[:, None] * inv[None, :])
    f = torch.cat(parts, dim=-1)
    return torch.cat([f, f], dim=-1).float()


def ref_rotate(x: Tensor) -> Tensor:
    out = torch.empty_like(x)
    out[..., 0::2] = -x[..., 1::2]
    out[..., 1::2] = x[..., 0::2]
    return out


def _norm(sd: dict, name: str, x: Tensor, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(sd: dict, name: str, x: Tensor) -> Tensor:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def ref_blocks(
    sd: dict,
    x: Tensor,
    pos: Tensor,
    num_heads: int,
    num_layers: int,
    mask: Tensor | None = None,
    eps: float = 1e-6,
) -> list[Tensor]:
    """layernorm_pre + blocks on [L, D] tokens; returns [after pre-norm, after block 1, ...]."""
    length, d = x.shape
    hd = d // num_heads
    ang = ref_rope_angles(pos, hd)
    cos, sin = ang.cos()[None], ang.sin()[None]
    x = _norm(sd, "layernorm_pre", x, eps)
    states = [x]
    for i in range(num_layers):
        p = f"encoder.layers.{i}"
        h = _norm(sd, f"{p}.layer_norm1", x, eps)
        q, k, v = (
            _linear(sd, f"{p}.self_attn.{n}_proj", h).view(length, num_heads, hd).transpose(0, 1)
            for n in "qkv"
        )
        q = q * cos + ref_rotate(q) * sin
        k = k * cos + ref_rotate(k) * sin
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if mask is not None:
            scores = scores.masked_fill(~mask[None], float("-inf"))
        att = scores.softmax(-1) @ v
        x = x + _linear(sd, f"{p}.self_attn.out_proj", att.transpose(0, 1).reshape(length, d))
        h = _norm(sd, f"{p}.layer_norm2", x, eps)
        x = x + _linear(sd, f"{p}.mlp.fc2", F.gelu(_linear(sd, f"{p}.mlp.fc1", h)))
        states.append(x)
    return states


def ref_head(sd: dict, x: Tensor, num_heads: int, eps: float = 1e-6) -> Tensor:
    """Released head on one sequence [L, D] (after layernorm_post) -> [D]."""
    d = x.shape[-1]
    probe = sd["head.probe"].reshape(1, 1, d)
    out, _ = F.multi_head_attention_forward(
        probe.transpose(0, 1),
        x[:, None],
        x[:, None],
        d,
        num_heads,
        sd["head.attention.in_proj_weight"],
        sd["head.attention.in_proj_bias"],
        None,
        None,
        False,
        0.0,
        sd["head.attention.out_proj.weight"],
        sd["head.attention.out_proj.bias"],
        need_weights=False,
    )
    a = out[0, 0]
    n = F.rms_norm(a, (d,), sd["head.norm.weight"], eps)
    return a + _linear(sd, "head.mlp.fc2", F.gelu(_linear(sd, "head.mlp.fc1", n)))


def ref_encode_frames(
    sd: dict, frames: Tensor, t_ids: list[int], num_heads: int, num_layers: int, patch: int
) -> tuple[Tensor, list[Tensor], Tensor]:
    """The released dense path for one clip: frames [T, 3, H, W] (normalised) -> (last, states, pooled)."""
    emb = F.conv2d(frames, sd["embeddings.patch_embedding.weight"], stride=patch)  # [T, D, gh, gw]
    t, d, gh, gw = emb.shape
    x = emb.flatten(2).transpose(1, 2).reshape(t * gh * gw, d)
    pos = torch.tensor([(tt, hh, ww) for tt in t_ids for hh in range(gh) for ww in range(gw)])
    states = ref_blocks(sd, x, pos, num_heads, num_layers)
    last = _norm(sd, "layernorm_post", states[-1], 1e-6)
    return last, states, ref_head(sd, last, num_heads)


def ref_encode_pack(
    sd: dict, patches: Tensor, pos: Tensor, cu: list[int], num_heads: int, num_layers: int
) -> tuple[Tensor, list[Tensor], Tensor]:
    """Dense masked reference on a pack: one attention over all tokens with a block-diagonal mask."""
    d = sd["embeddings.patch_embedding.weight"].shape[0]
    x = patches.reshape(patches.shape[0], -1) @ sd["embeddings.patch_embedding.weight"].reshape(d, -1).T
    seq = torch.cat([torch.full((b - a,), i) for i, (a, b) in enumerate(zip(cu[:-1], cu[1:]))])
    mask = seq[:, None] == seq[None, :]
    states = ref_blocks(sd, x, pos, num_heads, num_layers, mask=mask)
    last = _norm(sd, "layernorm_post", states[-1], 1e-6)
    pooled = torch.stack([ref_head(sd, last[a:b], num_heads) for a, b in zip(cu[:-1], cu[1:])])
    return last, states, pooled
