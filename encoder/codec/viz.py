"""A picture of a selection: sampled frames in a grid, selected patches bright, the rest dimmed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from encoder.codec.types import PatchSelection


def selection_mask(sel: PatchSelection, frame_t: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [F, H/p, W/p]: which patches of each canvas frame are selected."""
    p = sel.patch_size
    mask = np.zeros((len(frame_t), height // p, width // p), dtype=bool)
    lookup = {int(t): i for i, t in enumerate(frame_t)}
    idx = np.array([lookup.get(int(t), -1) for t in sel.positions[:, 0]], dtype=np.int64)
    keep = idx >= 0
    mask[idx[keep], sel.positions[keep, 1], sel.positions[keep, 2]] = True
    return mask


def render_selection(
    frames: np.ndarray,
    frame_t: np.ndarray,
    sel: PatchSelection,
    out_path: str | Path,
    *,
    columns: int = 8,
    dim: float = 0.25,
    max_tile: int = 160,
) -> Path:
    """Write a PNG: one tile per canvas frame (labelled by t), unselected patches dimmed to ``dim``."""
    f, h, w, _ = frames.shape
    p = sel.patch_size
    mask = selection_mask(sel, frame_t, h, w)
    pixel_mask = np.repeat(np.repeat(mask, p, axis=1), p, axis=2)[..., None]
    shown = np.where(pixel_mask, frames, (frames * dim).astype(np.uint8))
    cols = min(columns, f)
    rows = math.ceil(f / cols)
    scale = min(1.0, max_tile / max(h, w)) if f > 1 else 1.0
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    pad = 4
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + pad + 12) + pad), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for i in range(f):
        r, c = divmod(i, cols)
        x, y = pad + c * (tw + pad), pad + r * (th + pad + 12)
        tile = Image.fromarray(shown[i]).resize((tw, th), Image.Resampling.NEAREST)
        sheet.paste(tile, (x, y + 12))
        kept = int(mask[i].sum())
        draw.text((x, y), f"t={int(frame_t[i])} {kept}/{mask[i].size}", fill=(230, 230, 230))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path
