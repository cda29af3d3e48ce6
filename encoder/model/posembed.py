"""Fixed (parameter-free) 3D sin-cos embeddings of integer ``(t, h, w)`` token positions.

Used where a consumer of the OV-Encoder's tokens needs absolute positions: the encoder's own input with
``ViTConfig.abs_pos_embed="sincos3d"`` (the released design has relative 3D RoPE only), the LMM
projector's and the attentive probe's inputs with ``pos_embed="sincos3d"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Channel split of :func:`sincos3d` over (t, h, w), and the frequency base of every axis.
SINCOS_SPLIT: tuple[int, int, int] = (4, 6, 6)
SINCOS_BASE = 100.0


def _axis_channels(dim: int) -> tuple[int, int, int]:
    """Even channel counts per axis in the ratio :data:`SINCOS_SPLIT`, summing to at most ``dim``."""
    total = sum(SINCOS_SPLIT)
    t, h = (2 * (dim * r // (2 * total)) for r in SINCOS_SPLIT[:2])
    w = 2 * ((dim - t - h) // 2)
    return t, h, w


def _sincos_1d(pos: Tensor, channels: int) -> Tensor:
    """``[N] → [N, channels]``: ``sin(p·ω_k)`` then ``cos(p·ω_k)``, ``ω_k = SINCOS_BASE^(−k/n)``,
    k = 0 … n−1, n = channels / 2 (periods from 2π up to about 2π·SINCOS_BASE position units)."""
    n = channels // 2
    if n == 0:
        return pos.new_zeros(pos.shape[0], 0)
    omega = SINCOS_BASE ** (-torch.arange(n, dtype=torch.float64, device=pos.device) / n)
    angle = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def sincos3d(positions: Tensor, dim: int) -> Tensor:
    """Fixed 3D sin-cos embedding ``[N, dim]`` (float32) of integer ``(t, h, w)`` positions ``[N, 3]``.

    The channels are split 4 : 6 : 6 over t, h, w (even counts; a remainder of ``dim`` is zero) and
    each axis gets :func:`_sincos_1d` of its coordinate: t on the 64-frame grid, h / w patch indices
    (merged-token indices with ``merge=2``). Deterministic, and distinct positions give distinct vectors.
    """
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [N, 3] (t, h, w), got {tuple(positions.shape)}")
    ct, ch, cw = _axis_channels(dim)
    t, h, w = positions.unbind(1)
    parts = [_sincos_1d(t, ct), _sincos_1d(h, ch), _sincos_1d(w, cw)]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=1)
    return emb.float()


__all__ = ["SINCOS_BASE", "SINCOS_SPLIT", "sincos3d"]
