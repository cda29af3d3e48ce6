"""3D rotary position embedding over (t, h, w).

The ``head_dim // 2`` rotary frequencies are split over the three axes (4:6:6 by default); each axis has
its own inverse frequencies ``theta ** (-i / n)``, i = 0..n-1, with n the axis's share.  The per-token
angles are concatenated ``[t | h | w]`` (``head_dim // 2`` values) and expanded to ``head_dim``:

* ``compatible``: duplicated as ``cat([a, a])`` and applied with the interleaved rotate-half
  (pairs (2k, 2k+1) -> (-x[2k+1], x[2k])).  The two members of a pair then carry different angles: not
  a rotation, but exactly what the released weights were trained with.
* ``clean``: each pair (2k, 2k+1) shares angle a_k (``repeat_interleave``), a true 2D rotation per
  pair, so attention scores depend only on position differences.

Everything is computed in fp32 and the result cast back to the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def axis_inv_freqs(
    axis_sizes: tuple[int, int, int], theta: float, device: torch.device | None = None
) -> list[Tensor]:
    """Per-axis inverse frequencies ``theta ** (-i / n)`` for i < n, fp32."""
    return [1.0 / theta ** (torch.arange(n, dtype=torch.float32, device=device) / n) for n in axis_sizes]


def rope_angles(positions: Tensor, axis_sizes: tuple[int, int, int], theta: float) -> Tensor:
    """Angles ``[N, sum(axis_sizes)]`` (fp32) for integer positions ``[N, 3]`` = (t, h, w)."""
    pos = positions.to(torch.float32)
    freqs = axis_inv_freqs(axis_sizes, theta, positions.device)
    return torch.cat([pos[:, i, None] * f[None, :] for i, f in enumerate(freqs)], dim=-1)


def expand_angles(angles: Tensor, mode: str) -> Tensor:
    """Map ``[N, head_dim // 2]`` angles to ``[N, head_dim]`` per the rope mode."""
    if mode == "compatible":
        return torch.cat([angles, angles], dim=-1)
    if mode == "clean":
        return angles.repeat_interleave(2, dim=-1)
    raise ValueError(f"unknown rope mode {mode!r}; expected 'compatible' or 'clean'")


def rope_cos_sin(
    positions: Tensor, axis_sizes: tuple[int, int, int], theta: float, mode: str
) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of shape ``[N, 1, head_dim]`` (fp32), broadcastable over heads."""
    full = expand_angles(rope_angles(positions, axis_sizes, theta), mode)[:, None, :]
    return full.cos(), full.sin()


def rotate_pairs(x: Tensor) -> Tensor:
    """Interleaved rotate-half: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[N, H, head_dim]`` with precomputed ``cos, sin`` ``[N, 1, head_dim]``."""
    xf = x.float()
    return (xf * cos + rotate_pairs(xf) * sin).to(x.dtype)


__all__ = ["apply_rope", "axis_inv_freqs", "expand_angles", "rope_angles", "rope_cos_sin", "rotate_pairs"]
