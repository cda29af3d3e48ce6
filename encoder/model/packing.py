"""Packed variable-length input: patches of several sequences concatenated along one token axis.

A pack is ``pixels`` ``[N, C, p, p]`` (or flattened ``[N, C*p*p]``), ``positions`` ``[N, 3]`` as
(t, h, w) in patch units with t on the ``temporal_size``-frame virtual grid, and ``cu_seqlens``
``[B + 1]`` int32 (sequence i owns tokens ``cu_seqlens[i]:cu_seqlens[i+1]``).  Builders from images,
dense videos and codec patch selections live here, as does input validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class PackedInput:
    pixels: Tensor  # [N, C, p, p] or [N, C*p*p]; uint8 (raw) or float (already normalised)
    positions: Tensor  # [N, 3] int32 (t, h, w)
    cu_seqlens: Tensor  # [B + 1] int32

    @property
    def num_seqs(self) -> int:
        return self.cu_seqlens.numel() - 1

    def to(self, device: torch.device | str) -> PackedInput:
        return PackedInput(self.pixels.to(device), self.positions.to(device), self.cu_seqlens.to(device))


def cu_seqlens_from_lengths(lengths: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.tensor(list(lengths), dtype=torch.int32, device=device).cumsum(0)
    return cu


def video_time_grid(num_frames: int, temporal_size: int = 64) -> Tensor:
    """t of ``num_frames`` uniformly sampled frames on the virtual grid: ``floor(linspace(0, S-1, T))``."""
    if num_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    grid = torch.linspace(0, temporal_size - 1, num_frames, dtype=torch.float64)
    return grid.floor().to(torch.int32)


def grid_positions(t_ids: Tensor, grid_h: int, grid_w: int) -> Tensor:
    """(t, h, w) of every patch of frames ``t_ids``, frame-major then row-major: ``[T*gh*gw, 3]``."""
    t_ids = t_ids.to(torch.int32)
    t = t_ids.repeat_interleave(grid_h * grid_w)
    h = torch.arange(grid_h, dtype=torch.int32).repeat_interleave(grid_w).repeat(t_ids.numel())
    w = torch.arange(grid_w, dtype=torch.int32).repeat(grid_h * t_ids.numel())
    return torch.stack([t, h.to(t.device), w.to(t.device)], dim=-1)


def patchify(frames: Tensor, patch_size: int) -> Tensor:
    """Frames ``[T, C, H, W]`` -> patches ``[T*gh*gw, C, p, p]`` (frame-major, row-major)."""
    t, c, h, w = frames.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {p}")
    x = frames.reshape(t, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(t * (h // p) * (w // p), c, p, p)


def _pack(pieces: list[tuple[Tensor, Tensor]]) -> PackedInput:
    if not pieces:
        raise ValueError("cannot pack an empty list of sequences")
    pixels = torch.cat([p for p, _ in pieces])
    positions = torch.cat([q.to(pixels.device) for _, q in pieces])
    cu = cu_seqlens_from_lengths([p.shape[0] for p, _ in pieces], device=pixels.device)
    return PackedInput(pixels, positions, cu)


def _frames_and_positions(frames: Tensor, t_ids: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
    _, _, h, w = frames.shape
    pos = grid_positions(t_ids, h // patch_size, w // patch_size)
    return patchify(frames, patch_size), pos.to(frames.device)


def pack_images(images: Tensor | Sequence[Tensor], patch_size: int = 14) -> PackedInput:
    """Images ``[B, C, H, W]`` or a list of ``[C, H, W]`` (native sizes, multiples of p); t = 0."""
    if isinstance(images, Tensor) and images.dim() == 3:
        images = images[None]
    if isinstance(images, Tensor) and images.dim() != 4:
        raise ValueError(
            f"images must be [B, C, H, W] or a list of [C, H, W], got shape {tuple(images.shape)}"
        )
    pieces = []
    for img in images:
        if img.dim() != 3:
            raise ValueError(f"each image must be [C, H, W], got shape {tuple(img.shape)}")
        t_ids = torch.zeros(1, dtype=torch.int32)
        pieces.append(_frames_and_positions(img[None], t_ids, patch_size))
    return _pack(pieces)


def pack_videos(
    videos: Tensor | Sequence[Tensor], patch_size: int = 14, temporal_size: int = 64
) -> PackedInput:
    """Dense videos ``[B, C, T, H, W]`` or a list of ``[C, T, H, W]``; every patch of every frame."""
    if isinstance(videos, Tensor) and videos.dim() != 5:
        raise ValueError(
            f"videos must be [B, C, T, H, W] or a list of [C, T, H, W], got {tuple(videos.shape)}"
        )
    pieces = []
    for vid in videos:
        if vid.dim() != 4:
            raise ValueError(f"each video must be [C, T, H, W], got shape {tuple(vid.shape)}")
        t_ids = video_time_grid(vid.shape[1], temporal_size)
        pieces.append(_frames_and_positions(vid.transpose(0, 1), t_ids, patch_size))
    return _pack(pieces)


def pack_selections(selections: Sequence[Any], patch_size: int | None = None) -> PackedInput:
    """Pack codec outputs: any objects with ``pixels`` [K, C, p, p], ``positions`` [K, 3], ``patch_size``."""
    pieces = []
    for i, sel in enumerate(selections):
        for attr in ("pixels", "positions", "patch_size"):
            if not hasattr(sel, attr):
                raise ValueError(f"selection {i} has no attribute {attr!r} (expected a PatchSelection)")
        if patch_size is not None and int(sel.patch_size) != patch_size:
            raise ValueError(f"selection {i} has patch_size {sel.patch_size}, the model expects {patch_size}")
        pixels = torch.as_tensor(sel.pixels)
        positions = torch.as_tensor(sel.positions).to(torch.int32)
        if pixels.shape[0] != positions.shape[0]:
            raise ValueError(f"selection {i}: {pixels.shape[0]} patches but {positions.shape[0]} positions")
        pieces.append((pixels, positions))
    return _pack(pieces)


def validate_packed(
    pixels: Tensor,
    positions: Tensor,
    cu_seqlens: Tensor,
    *,
    patch_size: int,
    num_channels: int = 3,
    temporal_size: int = 64,
) -> None:
    """Raise ``ValueError`` naming the problem if the pack is malformed."""
    c, p = num_channels, patch_size
    if pixels.dim() == 4:
        if tuple(pixels.shape[1:]) != (c, p, p):
            raise ValueError(f"pixels must be [N, {c}, {p}, {p}], got {tuple(pixels.shape)}")
    elif pixels.dim() == 2:
        if pixels.shape[1] != c * p * p:
            raise ValueError(f"flattened pixels must be [N, {c * p * p}], got {tuple(pixels.shape)}")
    else:
        raise ValueError(f"pixels must be [N, {c}, {p}, {p}] or [N, {c * p * p}], got {tuple(pixels.shape)}")
    n = pixels.shape[0]
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [N, 3] (t, h, w), got {tuple(positions.shape)}")
    if positions.is_floating_point() or positions.is_complex():
        raise ValueError(f"positions must be integers, got {positions.dtype}")
    if positions.shape[0] != n:
        raise ValueError(f"pixels have {n} patches but positions have {positions.shape[0]} rows")
    _validate_cu_seqlens(cu_seqlens, n)
    if n == 0:
        return
    t, hw = positions[:, 0], positions[:, 1:]
    if int(t.min()) < 0 or int(t.max()) >= temporal_size:
        raise ValueError(
            f"t positions must lie in [0, {temporal_size}) (the virtual frame grid), "
            f"got range [{int(t.min())}, {int(t.max())}]"
        )
    if int(hw.min()) < 0:
        raise ValueError(f"h/w positions must be non-negative, got minimum {int(hw.min())}")


def _validate_cu_seqlens(cu_seqlens: Tensor, n: int) -> None:
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(
            f"cu_seqlens must be 1-D with B + 1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}"
        )
    if cu_seqlens.is_floating_point():
        raise ValueError(f"cu_seqlens must be integers, got {cu_seqlens.dtype}")
    cu = [int(c) for c in cu_seqlens.tolist()]
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {cu[0]}")
    diffs = [b - a for a, b in zip(cu[:-1], cu[1:])]
    if any(d < 0 for d in diffs):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {cu}")
    if cu[-1] != n:
        raise ValueError(f"cu_seqlens must end at the number of patches N={n}, got {cu[-1]}")
    empty = [i for i, d in enumerate(diffs) if d == 0]
    if empty:
        raise ValueError(f"empty sequence(s) at index {empty} in cu_seqlens {cu}")


__all__ = [
    "PackedInput",
    "cu_seqlens_from_lengths",
    "grid_positions",
    "pack_images",
    "pack_selections",
    "pack_videos",
    "patchify",
    "validate_packed",
    "video_time_grid",
]
