"""Motion fields and residuals (pure numpy / torch, no PyAV).

Field convention used everywhere: ``field[y, x] = (dx, dy)`` in pixels means the content of pixel (x, y)
of the current frame came from (x + dx, y + dy) of its reference frame, i.e. ``pred(x, y) =
ref(x + dx, y + dy)``. An object moving by +v between frames therefore has a field of about -v.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)  # BT.601


@dataclass(frozen=True)
class Geometry:
    """How a coded (src_h × src_w) frame maps onto the output (S×S, or H×W for a native-aspect frame).

    The frame is resized to (scaled_h, scaled_w), placed with its top-left corner at (top, left) on an
    (out_h × out_w) black canvas (negative offsets crop, positive ones pad), then rotated by ``rot_k``
    counter-clockwise quarter turns (``np.rot90`` convention) to honour the display rotation.
    """

    src_h: int
    src_w: int
    scaled_h: int
    scaled_w: int
    out_h: int
    out_w: int
    top: int
    left: int
    rot_k: int = 0

    @classmethod
    def make(
        cls, src_h: int, src_w: int, size: int | tuple[int, int], aspect: str = "resize", rotation_cw: int = 0
    ) -> Geometry:
        """Geometry for an aspect policy ("resize", "crop", "pad") and a clockwise display rotation.
        ``size``: the square side, or (H, W) as displayed for "resize" onto a rectangle."""
        rot_k = (-round(rotation_cw / 90)) % 4
        if not isinstance(size, int):
            if aspect != "resize":
                raise ValueError(f"a rectangular output needs aspect 'resize', got {aspect!r}")
            h, w = (size[1], size[0]) if rot_k % 2 else size  # the canvas before the display rotation
            return cls(src_h, src_w, h, w, h, w, 0, 0, rot_k)
        if aspect == "resize":
            sh, sw = size, size
        elif aspect in ("crop", "pad"):
            short, long_ = min(src_h, src_w), max(src_h, src_w)
            scale = size / (short if aspect == "crop" else long_)
            sh, sw = max(1, round(src_h * scale)), max(1, round(src_w * scale))
            if aspect == "crop":
                sh, sw = max(sh, size), max(sw, size)
            else:
                sh, sw = min(sh, size), min(sw, size)
        else:
            raise ValueError(f"unknown aspect policy {aspect!r}")
        return cls(src_h, src_w, sh, sw, size, size, (size - sh) // 2, (size - sw) // 2, rot_k)

    def place(self, img: np.ndarray) -> np.ndarray:
        """Crop / pad an already resized [scaled_h, scaled_w, ...] array onto the canvas, then rotate."""
        oh, ow = self.out_h, self.out_w
        if img.shape[:2] != (oh, ow) or self.top or self.left:
            out = np.zeros((oh, ow) + img.shape[2:], dtype=img.dtype)
            y0, x0 = max(0, self.top), max(0, self.left)
            y1, x1 = min(oh, self.top + self.scaled_h), min(ow, self.left + self.scaled_w)
            out[y0:y1, x0:x1] = img[y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left]
            img = out
        return np.ascontiguousarray(np.rot90(img, self.rot_k)) if self.rot_k else img


def rotate_vectors(field: np.ndarray, rot_k: int) -> np.ndarray:
    """Rotate a [H, W, 2] field like ``np.rot90(field, rot_k)``, turning the vectors with the image."""
    out = np.rot90(field, rot_k).copy()
    for _ in range(rot_k % 4):  # one ccw quarter turn maps (dx, dy) -> (dy, -dx)
        out[..., 0], out[..., 1] = out[..., 1].copy(), -out[..., 0]
    return out


def rgb_to_luma(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """BT.601 luma (0..255, float32) of uint8 RGB [..., 3]."""
    arr = rgb.numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
    return torch.from_numpy(np.ascontiguousarray(arr @ np.asarray(_LUMA, dtype=np.float32), dtype=np.float32))


def motion_vector_cell(mvs: np.ndarray) -> int:
    """Largest grid (≤ 16 px) on which every block of the side data is aligned: the lowest set bit of
    all sizes and corners together (a power of two, as gcd(..., 16) is)."""
    if len(mvs) == 0:
        return 16
    w, h = mvs["w"].astype(np.int64), mvs["h"].astype(np.int64)
    corners = np.concatenate([w, h, mvs["dst_x"] - w // 2, mvs["dst_y"] - h // 2])
    bits = int(np.bitwise_or.reduce(np.abs(corners))) | 16
    return bits & -bits


def rasterize_motion_vectors(
    mvs: np.ndarray, height: int, width: int, cell: int = 1, distances: tuple[int, int] = (1, 1)
) -> np.ndarray:
    """Rasterise FFmpeg MOTION_VECTORS side data into a float32 [ceil(H/cell), ceil(W/cell), 2] field.

    Blocks are w×h centred at (dst_x, dst_y); vectors are ``motion / motion_scale`` (quarter-pel for
    H.264), already in the pred(x) = ref(x + v) convention. Forward references (source < 0) win over
    backward ones; backward-only blocks use the negated backward vector. Uncovered (intra) pixels are 0.
    `distances` = (forward, backward) reference distances in frames: vectors are divided by them to give
    per-frame displacements (both 1 for streams without B-frames / with one reference).
    """
    gh, gw = -(-height // cell), -(-width // cell)
    field = np.zeros((gh, gw, 2), dtype=np.float32)
    n = len(mvs)
    if n == 0:
        return field
    back = mvs["source"] >= 0
    fwd, bwd = max(1, int(distances[0])), max(1, int(distances[1]))
    scale = np.where(back, -1.0 / bwd, 1.0 / fwd) / np.maximum(mvs["motion_scale"], 1)
    vec = np.empty((n, 2), dtype=np.float32)
    np.multiply(mvs["motion_x"], scale, out=vec[:, 0], casting="unsafe")
    np.multiply(mvs["motion_y"], scale, out=vec[:, 1], casting="unsafe")
    w, h = mvs["w"].astype(np.int64), mvs["h"].astype(np.int64)
    x0, y0 = mvs["dst_x"] - (w >> 1), mvs["dst_y"] - (h >> 1)
    if back.any() and not back.all():  # backward first, forward last (the last write wins)
        order = np.argsort(~back, kind="stable")
        vec, x0, y0, w, h = vec[order], x0[order], y0[order], w[order], h[order]
    cx0, cy0 = x0 // cell, y0 // cell
    nx = np.maximum(-(-(x0 + w) // cell) - cx0, 1)
    ny = np.maximum(-(-(y0 + h) // cell) - cy0, 1)
    counts = nx * ny
    if (counts == 1).all():  # one cell per block
        xs, ys, rep = cx0, cy0, None
    else:
        rep = np.repeat(np.arange(n), counts)
        local = np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts)
        nxr = nx[rep]
        xs, ys = cx0[rep] + local % nxr, cy0[rep] + local // nxr
    ok = (xs >= 0) & (xs < gw) & (ys >= 0) & (ys < gh)
    if not ok.all():
        xs, ys = xs[ok], ys[ok]
        rep = np.flatnonzero(ok) if rep is None else rep[ok]
    field[ys, xs] = vec if rep is None else vec[rep]
    return field


@lru_cache(maxsize=64)
def _nearest_cells(src: int, dst: int, cell: int, n_cells: int) -> np.ndarray:
    """Index of the source cell under each of `dst` output pixel centres (nearest sampling)."""
    idx = ((np.arange(dst) + 0.5) * (src / dst) // cell).astype(np.int64)
    idx = np.clip(idx, 0, n_cells - 1)
    idx.flags.writeable = False
    return idx


def resize_motion_field(
    field: np.ndarray, geometry: Geometry, cell: int = 1, out: np.ndarray | None = None
) -> np.ndarray:
    """Map a field on the coded frame's grid (pixels, or `cell`-px cells) to the output.

    Follows the frames' transform exactly: resize to (scaled_h, scaled_w) by nearest sampling at pixel
    centres (vectors scaled by the per-axis resize factors), crop / zero-pad, then rotate (vectors too).
    `out` (float32 [H, W, 2]) receives the result when given.
    """
    g = geometry
    ys = _nearest_cells(g.src_h, g.scaled_h, cell, field.shape[0])
    xs = _nearest_cells(g.src_w, g.scaled_w, cell, field.shape[1])
    factors = np.array([g.scaled_w / g.src_w, g.scaled_h / g.src_h], dtype=np.float32)
    rows = field.take(ys, axis=0).astype(np.float32, copy=False)
    direct = (
        out is not None
        and not (g.rot_k or g.top or g.left)
        and (g.scaled_h, g.scaled_w) == (g.out_h, g.out_w)
    )
    if direct:  # common "resize" case: write straight into the caller's buffer
        np.take(rows, xs, axis=1, out=out)
        if (g.scaled_h, g.scaled_w) != (g.src_h, g.src_w):
            out *= factors
        return out
    scaled = rows.take(xs, axis=1)
    scaled *= factors
    placed = dataclasses.replace(g, rot_k=0).place(scaled)
    result = rotate_vectors(placed, g.rot_k) if g.rot_k else placed
    if out is not None:
        out[...] = result
        return out
    return result


def _displacements(search_range: int) -> list[tuple[int, int]]:
    """All integer (dx, dy) in the search window, smallest |v| first (deterministic order)."""
    r = range(-search_range, search_range + 1)
    return sorted(((dx, dy) for dy in r for dx in r), key=lambda v: (v[0] ** 2 + v[1] ** 2, v[1], v[0]))


def estimate_motion(
    cur_luma: torch.Tensor,
    ref_luma: torch.Tensor,
    block_size: int = 8,
    search_range: int = 7,
    levels: int = 1,
) -> torch.Tensor:
    """Block matching: batched luma [B, H, W] -> field [B, H, W, 2] (float32, integer-valued).

    ``levels=1`` is the exhaustive search below; ``levels > 1`` searches a 2× average-pooled pyramid
    coarse to fine (:func:`_pyramid_search`): about 2× cheaper, 98–99% the same vectors.
    """
    cur = torch.as_tensor(cur_luma, dtype=torch.float32)
    ref = torch.as_tensor(ref_luma, dtype=torch.float32)
    squeeze = cur.dim() == 2
    if squeeze:
        cur, ref = cur[None], ref[None]
    if levels > 1:
        field = _pyramid_search(cur, ref, int(block_size), int(search_range), levels)
    else:
        field = _full_search(cur, ref, int(block_size), int(search_range))
    return field[0] if squeeze else field


def _full_search(cur: torch.Tensor, ref: torch.Tensor, block_size: int, search_range: int) -> torch.Tensor:
    """Exhaustive block matching: float luma [B, H, W] -> field [B, H, W, 2] (float32, integer-valued).

    For each block_size² block of `cur`, the displacement v with |v|∞ ≤ search_range minimising the SAD
    between the block and ref shifted by v (border replicated). Ties go to the smallest |v| (then the
    smallest dy, dx), so flat regions get 0. Luma is rounded to integers first (exact integer SADs).
    Loops over displacements only; everything else is vectorised.
    """
    b, h, w = cur.shape
    bs, r = block_size, search_range
    hb, wb = -(-h // bs), -(-w // bs)
    ph, pw = hb * bs - h, wb * bs - w
    cur_p = F.pad(cur[:, None], (0, pw, 0, ph), mode="replicate")[:, 0] if ph or pw else cur
    ref_p = F.pad(ref[:, None], (r, r + pw, r, r + ph), mode="replicate")[:, 0]
    # 0..255 luma rounded to int16: exact integer SADs (int32 block sums), fast and tie-stable
    cur_p, ref_p = cur_p.round().to(torch.int16), ref_p.round().to(torch.int16)
    disps = _displacements(r)
    best = torch.full((b, hb, wb), torch.iinfo(torch.int32).max, dtype=torch.int32)
    best_k = torch.zeros((b, hb, wb), dtype=torch.int64)
    diff = torch.empty_like(cur_p)
    for k, (dx, dy) in enumerate(disps):
        shifted = ref_p[:, r + dy : r + dy + hb * bs, r + dx : r + dx + wb * bs]
        torch.sub(cur_p, shifted, out=diff).abs_()
        sad = diff.view(b, hb * bs, wb, bs).sum(-1, dtype=torch.int32).view(b, hb, bs, wb).sum(2)
        better = sad < best
        best = torch.where(better, sad, best)
        best_k.masked_fill_(better, k)
    return _blocks_to_pixels(torch.tensor(disps, dtype=torch.float32)[best_k], bs, h, w)


_REFINE = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]


def _pyramid_search(
    cur: torch.Tensor, ref: torch.Tensor, block_size: int, search_range: int, levels: int
) -> torch.Tensor:
    """Coarse-to-fine block matching: search half resolution (half the range; the same block size, so
    each coarse block sees twice the area and matches less ambiguously), then test per
    full-resolution block 2·v_coarse + δ (|δ|∞ ≤ 1), the zero vector and the four neighbouring blocks'
    predictions (as codecs' predictive searches do: it repairs ambiguous coarse matches). Ties prefer
    the earlier candidate (δ = 0 first)."""
    b, h, w = cur.shape
    bs = block_size
    if bs < 2 or min(h, w) < 4 * bs:  # too small to coarsen: exhaustive
        return _full_search(cur, ref, bs, search_range)
    pool = lambda x: F.avg_pool2d(x[:, None], 2, ceil_mode=True)[:, 0]  # noqa: E731
    coarse_range = -(-search_range // 2)
    if levels > 2:  # same block size at half resolution: each coarse block sees 2x the area
        coarse = _pyramid_search(pool(cur), pool(ref), bs, coarse_range, levels - 1)
    else:
        coarse = _full_search(pool(cur), pool(ref), bs, coarse_range)
    hb, wb = -(-h // bs), -(-w // bs)
    cy = torch.clamp(torch.arange(hb) * bs // 2 + bs // 4, max=coarse.shape[1] - 1)
    cx = torch.clamp(torch.arange(wb) * bs // 2 + bs // 4, max=coarse.shape[2] - 1)
    pred = (2 * coarse[:, cy][:, :, cx]).round().long()  # [b, hb, wb, 2]
    cur_i = F.pad(cur[:, None], (0, wb * bs - w, 0, hb * bs - h), mode="replicate")[:, 0].round()
    cur_blocks = cur_i.view(b, hb, bs, wb, bs).permute(0, 1, 3, 2, 4).contiguous()
    ref_flat = ref.round().reshape(b, -1)
    rows = (torch.arange(hb)[:, None] * bs + torch.arange(bs)).view(1, hb, 1, bs, 1)
    cols = (torch.arange(wb)[:, None] * bs + torch.arange(bs)).view(1, 1, wb, 1, bs)
    best_sad = torch.full((b, hb, wb), float("inf"))
    best_v = torch.zeros(b, hb, wb, 2, dtype=torch.long)
    neighbours = [torch.roll(pred, shift, dims=dim) for shift in (1, -1) for dim in (1, 2)]
    candidates = [pred + torch.tensor(d) for d in _REFINE] + [torch.zeros_like(pred), *neighbours]
    for v in candidates:
        v = v.clamp(-search_range, search_range)
        ys = (rows + v[..., 1, None, None]).clamp_(0, h - 1)
        xs = (cols + v[..., 0, None, None]).clamp_(0, w - 1)
        vals = ref_flat.gather(1, (ys * w + xs).view(b, -1)).view(b, hb, wb, bs, bs)
        sad = (cur_blocks - vals).abs_().sum((-1, -2))
        better = sad < best_sad
        best_sad = torch.where(better, sad, best_sad)
        best_v = torch.where(better[..., None], v, best_v)
    return _blocks_to_pixels(best_v.float(), bs, h, w)


def _blocks_to_pixels(vecs: torch.Tensor, bs: int, h: int, w: int) -> torch.Tensor:
    """Per-block vectors [B, hb, wb, 2] → per-pixel field [B, H, W, 2]."""
    return vecs.repeat_interleave(bs, dim=1).repeat_interleave(bs, dim=2)[:, :h, :w]


@lru_cache(maxsize=8)
def _base_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis pixel→normalised scale and the identity sampling grid [H, W, 2] (align_corners=True)."""
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return scale, torch.stack([xs, ys], dim=-1).mul_(scale).sub_(1.0)


def warp(ref_luma: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """pred(x, y) = ref(x + dx, y + dy), bilinear, border-replicate. [B, H, W] (or [H, W]) + [..., 2]."""
    ref = torch.as_tensor(ref_luma, dtype=torch.float32)
    fld = torch.as_tensor(field, dtype=torch.float32)
    squeeze = ref.dim() == 2
    if squeeze:
        ref, fld = ref[None], fld[None]
    b, h, w = ref.shape
    scale, base = _base_grid(h, w)
    grid = (fld * scale).add_(base)  # pixel displacement -> normalised coords (align_corners=True)
    out = F.grid_sample(ref[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
    return out[0] if squeeze else out


def residual_energy(cur: torch.Tensor, ref: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """|cur − warp(ref, field)| (same shape as cur)."""
    return (torch.as_tensor(cur, dtype=torch.float32) - warp(ref, field)).abs_()
