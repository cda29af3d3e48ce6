"""Native-aspect sizing under a cell budget (the NaFlex ``max_num_patches`` rule).

A frame or image keeps its aspect ratio and is resized to the largest grid of ``cell``-pixel squares
with at most ``max_cells`` of them; the frame-based towers and still images use it so that a token
budget, not a fixed square side, decides the resolution.
"""

from __future__ import annotations

import math


def fit_grid(cells: int, aspect_hw: tuple[float, float] = (1, 1)) -> tuple[int, int]:
    """The largest aspect-preserving grid with gh · gw ≤ ``cells``: (ceil(h·s), ceil(w·s)) for the
    largest scale s that fits (the NaFlex processors' rule; ``aspect_hw`` = (h, w), e.g. in pixels)."""
    if cells < 1:
        raise ValueError(f"a grid needs at least 1 cell, got {cells}")
    h, w = (float(x) for x in aspect_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"aspect must be positive, got {aspect_hw}")

    def grid(scale: float) -> tuple[int, int]:
        return max(1, math.ceil(h * scale - 1e-9)), max(1, math.ceil(w * scale - 1e-9))

    lo, hi = 0.0, float(cells) / min(h, w) + 1.0
    for _ in range(100):  # bisection on the scale: grid(lo) always fits
        mid = (lo + hi) / 2
        gh, gw = grid(mid)
        lo, hi = (mid, hi) if gh * gw <= cells else (lo, mid)
    return grid(lo)


def native_size(height: int, width: int, max_cells: int, cell: int) -> tuple[int, int]:
    """(H, W) in pixels, multiples of ``cell``, for a ``height`` × ``width`` picture under ``max_cells``."""
    if cell < 1:
        raise ValueError(f"cell must be >= 1 pixel, got {cell}")
    gh, gw = fit_grid(max_cells, (height, width))
    return gh * cell, gw * cell


__all__ = ["fit_grid", "native_size"]
