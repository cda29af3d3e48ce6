"""Per-pixel saliency from codec motion vectors and residuals, and per-patch scores.

Pipeline (:func:`saliency_map`): remove the camera's global motion from the motion field
(:func:`compensate_camera`), take the magnitude of what is left (motion energy, pixels), normalise it
and the residual energy per frame by their own high percentile (:func:`normalize_per_frame`), and fuse
the two maps (:func:`fuse`).  :func:`patch_scores` sums the map over each ``p x p`` patch.

Per-frame statistics (the median vector, the similarity fit, the percentile) are estimated on a regular
subsample of at most ``max_stat_points`` pixels per frame (exact for frames that small).  Codec motion is
block-constant, so this loses little and keeps 64 frames at 448^2 fast.

Inputs must be finite.  Functions that take arrays accept numpy arrays or CPU/GPU torch tensors; the
array-to-array helpers return the input's type, :func:`saliency_map` and :func:`patch_scores` return
numpy.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from encoder.typed_config import ConfigError, check_choices

Camera = Literal["median", "similarity", "none"]
Fusion = Literal["mean", "max", "geomean"]
CAMERA_MODES: tuple[str, ...] = typing.get_args(Camera)
FUSION_MODES: tuple[str, ...] = typing.get_args(Fusion)
DEFAULT_STAT_POINTS = 4096  # 64 x 64 pixels per frame for the per-frame statistics
FIT_POINTS = (
    1024  # at most this many pixels per frame enter the similarity fit (2048 and 512 select the same)
)
_EPS = 1e-6  # a percentile at or below this counts as zero (see normalize_per_frame)
_SIGMA_FLOOR = 0.05  # px: the robust fit's residual scale never drops below this (MVs are 1/4-pel)
_HUBER_K = 1.345
_TUKEY_C = 4.685

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class SaliencyConfig:
    """How motion and residual become one saliency map.

    camera: "similarity" (default) subtracts a robust per-frame similarity fit (scale + rotation +
        translation, IRLS: Huber then Tukey weights); "median" subtracts each frame's component-wise
        median vector (a pan only: on handheld shake with rotation and zoom it leaves the textured
        background moving, mover recall 0.84-0.90 vs 1.00, tests/encoder/codec/test_pipeline.py); "none" keeps
        the raw field.
    fusion: "mean" = (w_motion*mv + w_residual*res) / (w_motion + w_residual); "max" =
        max(w_motion*mv, w_residual*res) / max(w_motion, w_residual); "geomean" = mv**(w_motion/W) *
        res**(w_residual/W), W = w_motion + w_residual (zero wherever either weighted cue is zero).
    percentile: per-frame normalisation x / max(percentile(x), floor), clipped to [0, 1].
    motion_floor, residual_floor: absolute noise floors (pixels of motion, luma levels of residual).
        A frame whose signal stays below them is codec noise (quarter-pel jitter, the requantisation
        of a periodic I-frame): it is divided by the floor instead of being stretched to 1, and a clip
        whose every frame stays below both floors is static (see :func:`is_static`).
    max_stat_points: pixels per frame used for the per-frame statistics (None = all of them).
    """

    camera: Camera = "similarity"
    fusion: Fusion = "mean"
    w_motion: float = 1.0
    w_residual: float = 1.0
    percentile: float = 95.0
    motion_floor: float = 1.0
    residual_floor: float = 16.0
    max_stat_points: int | None = DEFAULT_STAT_POINTS

    def validate(self) -> None:
        """ConfigError on an unknown mode or a bad weight/percentile."""
        check_choices(self)
        if self.w_motion < 0 or self.w_residual < 0 or self.w_motion + self.w_residual <= 0:
            raise ConfigError(
                f"weights must be >= 0 with a positive sum, got w_motion={self.w_motion}, "
                f"w_residual={self.w_residual}"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.motion_floor < 0 or self.residual_floor < 0:
            raise ConfigError(f"noise floors must be >= 0, got {self.motion_floor}, {self.residual_floor}")
        if self.max_stat_points is not None and self.max_stat_points < 1:
            raise ConfigError(f"max_stat_points must be >= 1 or None, got {self.max_stat_points}")


# ---- small helpers ----------------------------------------------------------------------------------
def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_percentile(percentile: float) -> None:
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")


def _to_numpy(x: Any) -> np.ndarray:
    """float32 numpy view/copy of a numpy array or torch tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _like(out: np.ndarray, ref: Any) -> ArrayLike:
    """``out`` as the same kind of array as ``ref`` (torch tensors keep their device)."""
    if isinstance(ref, torch.Tensor):
        return torch.from_numpy(out).to(ref.device)
    return out


def _stride(n: int, max_points: int | None) -> int:
    return 1 if max_points is None or n <= max_points else -(-n // max_points)


def _frame_sample(x: np.ndarray, max_points: int | None) -> np.ndarray:
    """[T, ...] → [T, n] regular subsample of each frame's values (n <= max_points)."""
    flat = x.reshape(len(x), -1)
    return flat[:, :: _stride(flat.shape[1], max_points)]


def _check_motion(motion: np.ndarray) -> None:
    if motion.ndim != 4 or motion.shape[-1] != 2:
        raise ValueError(f"motion must be [T, H, W, 2], got shape {tuple(motion.shape)}")


# ---- camera motion ----------------------------------------------------------------------------------
def fit_similarity(
    motion: ArrayLike, *, iters: int = 6, max_points: int | None = DEFAULT_STAT_POINTS
) -> np.ndarray:
    """Robust per-frame similarity fit of a [T, H, W, 2] field; float64 [T, 6] (a, b, cx, cy, tx, ty).

    The global field is d(x, y) = (a*X - b*Y + tx, b*X + a*Y + ty) with X = x - cx, Y = y - cy (x = column,
    y = row, in pixels); a = s*cos(r) - 1, b = s*sin(r) for zoom s and rotation r.  Starts from the median
    translation, then weighted least squares (closed form, vectorised over frames) with Huber weights for
    the first half of ``iters`` and Tukey biweights after, so independent movers end with weight 0.
    """
    m = _to_numpy(motion)
    _check_motion(m)
    t, h, w, _ = m.shape
    step = _stride(h * w, max_points)
    ys, xs = np.divmod(np.arange(0, h * w, step), w)
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    d = m.reshape(t, h * w, 2)[:, ::step].astype(np.float64)
    dx, dy = d[..., 0], d[..., 1]
    a, b = np.zeros(t), np.zeros(t)
    cx, cy = np.full(t, xs.mean()), np.full(t, ys.mean())
    tx, ty = np.median(dx, axis=1), np.median(dy, axis=1)
    for it in range(iters):
        bx, by = xs[None] - cx[:, None], ys[None] - cy[:, None]
        rx = dx - (a[:, None] * bx - b[:, None] * by + tx[:, None])
        ry = dy - (b[:, None] * bx + a[:, None] * by + ty[:, None])
        r2 = rx * rx + ry * ry
        r = np.sqrt(r2)
        sigma = np.maximum(1.4826 * np.median(r, axis=1), _SIGMA_FLOOR)[:, None]
        if it < (iters + 1) // 2:
            wt = np.minimum(1.0, _HUBER_K * sigma / np.maximum(r, 1e-12))
        else:
            wt = np.maximum(1.0 - r2 / (_TUKEY_C * sigma) ** 2, 0.0)
            wt *= wt
        a, b, cx, cy, tx, ty = _weighted_similarity(xs, ys, dx, dy, wt, (a, b, cx, cy, tx, ty))
    return np.stack([a, b, cx, cy, tx, ty], axis=1)


def _weighted_similarity(
    xs: np.ndarray, ys: np.ndarray, dx: np.ndarray, dy: np.ndarray, wt: np.ndarray, prev: tuple
) -> tuple[np.ndarray, ...]:
    """Closed-form weighted LS similarity per frame; frames with no weight keep ``prev``."""
    sw = wt.sum(axis=1)
    ok = sw > 1e-9
    sw = np.where(ok, sw, 1.0)
    cx, cy = (wt * xs).sum(axis=1) / sw, (wt * ys).sum(axis=1) / sw
    tx, ty = (wt * dx).sum(axis=1) / sw, (wt * dy).sum(axis=1) / sw
    bx, by = xs[None] - cx[:, None], ys[None] - cy[:, None]
    den = (wt * (bx * bx + by * by)).sum(axis=1)
    good = den > 1e-9
    den = np.where(good, den, 1.0)
    a = np.where(good, (wt * (bx * dx + by * dy)).sum(axis=1) / den, 0.0)
    b = np.where(good, (wt * (bx * dy - by * dx)).sum(axis=1) / den, 0.0)
    new = (a, b, cx, cy, tx, ty)
    return tuple(np.where(ok, n, p) for n, p in zip(new, prev))


def _compensated_components(
    m: np.ndarray, mode: str, max_points: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) new float32 [T, H, W] arrays, with the per-frame global motion removed."""
    _check_choice("camera", mode, CAMERA_MODES)
    _check_motion(m)
    ux, uy = m[..., 0], m[..., 1]
    if mode == "none":
        return ux.copy(), uy.copy()
    if mode == "median":
        vecs = m.reshape(len(m), -1, 2)
        med = np.median(vecs[:, :: _stride(vecs.shape[1], max_points)], axis=1).astype(np.float32)
        return ux - med[:, 0, None, None], uy - med[:, 1, None, None]
    fit_points = FIT_POINTS if max_points is None else min(max_points, FIT_POINTS)
    a, b, cx, cy, tx, ty = (p.astype(np.float32) for p in fit_similarity(m, max_points=fit_points).T)
    _, h, w, _ = m.shape
    bx = np.arange(w, dtype=np.float32)[None, :] - cx[:, None]  # [T, W]
    by = np.arange(h, dtype=np.float32)[None, :] - cy[:, None]  # [T, H]
    ox = ux - (a[:, None] * bx + tx[:, None])[:, None, :]  # the x-dependent part, then the y-dependent
    ox += (b[:, None] * by)[:, :, None]
    oy = uy - (b[:, None] * bx + ty[:, None])[:, None, :]
    oy -= (a[:, None] * by)[:, :, None]
    return ox, oy


def compensate_camera(
    motion: ArrayLike, mode: str = "median", *, max_points: int | None = DEFAULT_STAT_POINTS
) -> ArrayLike:
    """[T, H, W, 2] motion minus each frame's global (camera) motion; same array type as the input."""
    ux, uy = _compensated_components(_to_numpy(motion), mode, max_points)
    return _like(np.stack([ux, uy], axis=-1), motion)


# ---- normalisation and fusion -----------------------------------------------------------------------
def _normalize_inplace(
    arr: np.ndarray, percentile: float, max_points: int | None, floor: float = 0.0
) -> np.ndarray:
    """normalize_per_frame on a float32 array this module owns (overwritten and returned)."""
    den = np.percentile(_frame_sample(arr, max_points), percentile, axis=1).astype(np.float32)
    for t in np.flatnonzero(den <= _EPS):  # rare: near-empty frames
        den[t] = arr[t].max()
    np.maximum(den, np.float32(floor), out=den)
    scale = np.where(den > _EPS, 1.0 / np.maximum(den, _EPS), 0.0).astype(np.float32)
    arr *= scale.reshape((-1,) + (1,) * (arr.ndim - 1))
    return np.clip(arr, 0.0, 1.0, out=arr)


def normalize_per_frame(
    x: ArrayLike,
    percentile: float = 95.0,
    *,
    max_points: int | None = DEFAULT_STAT_POINTS,
    floor: float = 0.0,
) -> ArrayLike:
    """[T, ...] → x / max(percentile(frame), floor), clipped to [0, 1]; same array type as the input.

    A frame whose percentile is <= 1e-6 (most of it is zero, e.g. a small mover on a still background)
    is divided by its maximum instead, so its few active pixels keep their relative strength; a frame
    whose maximum is also <= 1e-6 becomes all zeros.  Negative values clip to 0.
    """
    _check_percentile(percentile)
    arr = _to_numpy(x)
    if arr.ndim < 1 or arr.size == 0:
        raise ValueError(f"x must be a non-empty [T, ...] array, got shape {tuple(arr.shape)}")
    return _like(_normalize_inplace(arr.copy(), percentile, max_points, floor), x)


def _fuse_inplace(m: np.ndarray, r: np.ndarray, cfg: SaliencyConfig) -> np.ndarray:
    """fuse() overwriting both float32 maps; the result is ``m``."""
    wm, wr = float(cfg.w_motion), float(cfg.w_residual)
    if cfg.fusion == "mean":
        if wm == wr:
            m += r
            m *= np.float32(0.5)
            return m
        m *= np.float32(wm / (wm + wr))
        r *= np.float32(wr / (wm + wr))
        m += r
    elif cfg.fusion == "max":
        m *= np.float32(wm / max(wm, wr))
        r *= np.float32(wr / max(wm, wr))
        np.maximum(m, r, out=m)
    else:
        np.power(np.maximum(m, 0, out=m), np.float32(wm / (wm + wr)), out=m)
        m *= np.power(np.maximum(r, 0, out=r), np.float32(wr / (wm + wr)), out=r)
    return m


def fuse(mv_energy: ArrayLike, res_energy: ArrayLike, cfg: SaliencyConfig) -> ArrayLike:
    """Fuse two normalised [T, H, W] maps per ``cfg.fusion`` and weights; same type as ``mv_energy``."""
    cfg.validate()
    m, r = _to_numpy(mv_energy), _to_numpy(res_energy)
    if m.shape != r.shape:
        raise ValueError(f"energy maps differ in shape: {tuple(m.shape)} vs {tuple(r.shape)}")
    return _like(_fuse_inplace(m.copy(), r.copy(), cfg), mv_energy)


# ---- public entry points ----------------------------------------------------------------------------
def motion_energy(
    motion: ArrayLike, mode: str = "median", *, max_points: int | None = DEFAULT_STAT_POINTS
) -> np.ndarray:
    """float32 [T, H, W]: magnitude (pixels) of the camera-compensated motion."""
    ux, uy = _compensated_components(_to_numpy(motion), mode, max_points)
    ux *= ux
    uy *= uy
    ux += uy
    return np.sqrt(ux, out=ux)


def energies(
    motion: ArrayLike, residual: ArrayLike, cfg: SaliencyConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-pixel energies (float32 [T, H, W] each): camera-compensated motion magnitude in pixels
    and |residual| in luma levels. Compute them once; :func:`is_static` and
    :func:`saliency_from_energies` both read them."""
    cfg = cfg or SaliencyConfig()
    cfg.validate()
    m, res = _to_numpy(motion), _to_numpy(residual)
    _check_motion(m)
    if res.shape != m.shape[:3]:
        raise ValueError(f"residual must be {tuple(m.shape[:3])} to match motion, got {tuple(res.shape)}")
    return motion_energy(m, cfg.camera, max_points=cfg.max_stat_points), np.abs(res).astype(np.float32)


def is_static(mv_energy: np.ndarray, res_energy: np.ndarray, cfg: SaliencyConfig | None = None) -> bool:
    """True when no frame rises above the noise floors: the 99th percentile of the motion energy stays
    below ``motion_floor`` and that of the residual below ``residual_floor`` in every frame."""
    cfg = cfg or SaliencyConfig()
    m99 = np.percentile(_frame_sample(mv_energy, cfg.max_stat_points), 99.0, axis=1)
    r99 = np.percentile(_frame_sample(res_energy, cfg.max_stat_points), 99.0, axis=1)
    return bool((m99 < cfg.motion_floor).all() and (r99 < cfg.residual_floor).all())


def saliency_from_energies(
    mv_energy: np.ndarray, res_energy: np.ndarray, cfg: SaliencyConfig | None = None
) -> np.ndarray:
    """float32 [T, H, W] in [0, 1]: per-frame normalised (with noise floors) and fused energies.
    Overwrites its inputs (they are the caller's scratch arrays from :func:`energies`)."""
    cfg = cfg or SaliencyConfig()
    mv = _normalize_inplace(mv_energy, cfg.percentile, cfg.max_stat_points, cfg.motion_floor)
    rs = _normalize_inplace(res_energy, cfg.percentile, cfg.max_stat_points, cfg.residual_floor)
    return _fuse_inplace(mv, rs, cfg)


def saliency_map(motion: ArrayLike, residual: ArrayLike, cfg: SaliencyConfig | None = None) -> np.ndarray:
    """float32 [T, H, W] in [0, 1] from motion [T, H, W, 2] (px) and residual [T, H, W] (luma)."""
    cfg = cfg or SaliencyConfig()
    return saliency_from_energies(*energies(motion, residual, cfg), cfg)


def patch_scores(saliency: ArrayLike, patch_size: int = 14) -> np.ndarray:
    """float32 [T, H/p, W/p]: per-patch sum of a [T, H, W] map; ValueError if p does not divide H and W."""
    s = _to_numpy(saliency)
    p = int(patch_size)
    if p != patch_size or p < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    if s.ndim != 3:
        raise ValueError(f"saliency must be [T, H, W], got shape {tuple(s.shape)}")
    t, h, w = s.shape
    if h % p or w % p:
        raise ValueError(f"map size {h}x{w} is not divisible by patch_size {p}")
    return s.reshape(t, h // p, p, w // p, p).sum(axis=2, dtype=np.float32).sum(axis=-1)
