"""Choose which patches of a clip to keep under a token budget K, given per-patch scores [T, gh, gw].

Context frames (``SelectConfig.context``) are kept dense; the remaining budget R = K - (context patches)
goes to the highest-scoring patches of the other ("candidate") frames:

- ``global``  top-R over all candidate patches.
- ``buckets`` frame t belongs to temporal bucket floor(t * B / T); each bucket's share of R is
  proportional to its number of candidate frames (largest-remainder rounding, so equal buckets get
  equal shares +-1), capped by its capacity, overflow redistributed (:func:`allocate`); top-k inside.
- ``bitcost`` per-frame bit costs from packet sizes (:func:`frame_bit_costs`) split the clip into at most
  ``max_groups`` contiguous groups that follow jumps in the bit rate (:func:`bitcost_groups`); each
  group's share of R is proportional to the bits of its candidate frames (:func:`allocate`); top-k inside.

``min_score`` (off by default) makes K a cap rather than a quota: candidate patches scoring at most
``min_score`` are never picked, so a clip whose informative patches are fewer than R yields fewer
than K patches instead of spending the rest on codec noise (the packed encoder and the LMM take any
length). Grouped modes then allocate over the eligible patches of each group.

Static clips: the scores carry no information and R is spent on uniformly spaced dense frames instead
(:func:`fallback_patches`). The pipeline decides "static" from the raw motion and residual against
absolute noise floors (:func:`encoder.codec.saliency.is_static`) and passes ``static=``; without it,
a clip is static when no candidate patch scores above ``static_threshold`` (default 1e-6, all ~zero).

Ties are broken by (frame, row, col) ascending (stable sort on -score over the (t, h, w)-ordered
flattening); the output is sorted by (frame, row, col).
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from encoder.typed_config import ConfigError, check_choices

Context = Literal["first", "iframes", "none"]
SelectMode = Literal["global", "buckets", "bitcost"]
CONTEXT_MODES: tuple[str, ...] = typing.get_args(Context)
SELECT_MODES: tuple[str, ...] = typing.get_args(SelectMode)
_BALANCE = 1e-9  # tiny per-group length**2 penalty: splits a flat bit rate into near-equal groups


@dataclass
class SelectConfig:
    """Budget and strategy (see the module docstring).

    budget: int = total patches K including context (1..T*gh*gw); float in (0, 1] = fraction of
        T*gh*gw, rounded to the nearest integer (must round to >= 1).
    context: "first" (frame 0 dense), "iframes" (every sampled I-frame dense; frame 0 if there is none),
        "none".  Context needing more than K patches is a ValueError.
    static_threshold: the clip is static when every candidate patch score is <= this.
    min_score: None (fill the budget) or a patch score; candidate patches scoring <= it are not picked,
        so the selection may hold fewer than K patches (the static fallback is not affected).
    """

    budget: int | float = 2048
    context: Context = "first"
    mode: SelectMode = "global"
    num_buckets: int = 8
    static_threshold: float = 1e-6
    max_groups: int = 8
    min_score: float | None = None
    seed: int = 0  # the draw of the ``random`` input mode (encoder.codec.pipeline)

    def validate(self) -> None:
        """ConfigError on an unknown mode or bad numbers (the budget is checked on use)."""
        check_choices(self)
        if int(self.num_buckets) != self.num_buckets or self.num_buckets < 1:
            raise ConfigError(f"num_buckets must be a positive integer, got {self.num_buckets!r}")
        if int(self.max_groups) != self.max_groups or self.max_groups < 1:
            raise ConfigError(f"max_groups must be a positive integer, got {self.max_groups!r}")
        if self.min_score is not None and not (np.isfinite(self.min_score) and self.min_score >= 0):
            raise ConfigError(f"min_score must be None or a finite score >= 0, got {self.min_score!r}")


@dataclass
class Selection:
    """Selected patches, sorted by (frame_index, row, col)."""

    frame_index: np.ndarray  # int64 [K] index into the T sampled frames
    row: np.ndarray  # int64 [K]
    col: np.ndarray  # int64 [K]
    score: np.ndarray  # float32 [K]
    is_context: np.ndarray  # bool [K]
    fallback: bool  # static fallback used
    groups: np.ndarray | None = None  # bitcost: int64 [T] group id per sampled frame
    capped: bool = False  # the budget asked for more patches than the clip has: every patch is kept

    def __len__(self) -> int:
        return len(self.frame_index)


# ---- budget, context, allocation --------------------------------------------------------------------
def resolve_budget(budget: int | float, total: int) -> int:
    """Number of patches K for ``budget`` out of ``total``: ints are counts, capped at ``total`` (a clip
    shorter or smaller than the budget gives every patch it has), floats fractions."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise ValueError(f"budget must be an int count or a float fraction in (0, 1], got {budget!r}")
    if isinstance(budget, (int, np.integer)):
        if budget <= 0:
            raise ValueError(f"budget must be a positive number of patches, got {budget}")
        return int(min(budget, total))
    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"a float budget is a fraction and must be in (0, 1], got {budget}")
    k = int(round(float(budget) * total))
    if k < 1:
        raise ValueError(f"budget fraction {budget} of {total} patches rounds to 0 patches")
    return k


def context_frames(num_frames: int, context: str, pict_types: Sequence[str] | None = None) -> np.ndarray:
    """int64 sorted indices of the frames kept dense."""
    if context not in CONTEXT_MODES:
        raise ValueError(f"context must be one of {CONTEXT_MODES}, got {context!r}")
    if context == "none":
        return np.zeros(0, dtype=np.int64)
    if context == "first":
        return np.zeros(1, dtype=np.int64)
    if pict_types is None:
        raise ValueError("context='iframes' needs pict_types")
    if len(pict_types) != num_frames:
        raise ValueError(f"pict_types has {len(pict_types)} entries for {num_frames} frames")
    idx = np.flatnonzero(np.asarray([str(p).upper() == "I" for p in pict_types], dtype=bool))
    return idx.astype(np.int64) if len(idx) else np.zeros(1, dtype=np.int64)


def allocate(total: int, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Split ``total`` into int64 shares proportional to ``weights`` (largest remainder, ties to the lower
    index), each capped by ``capacity``; what a full group cannot take goes to the others by weight.
    Groups with zero weight get patches only once all positive-weight groups are full (then by free room).
    """
    w = np.asarray(weights, dtype=np.float64)
    cap = np.asarray(capacity, dtype=np.int64)
    if total > cap.sum():
        raise ValueError(f"cannot place {total} patches in a capacity of {cap.sum()}")
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("allocation weights must be finite and >= 0")
    alloc = np.zeros(len(cap), dtype=np.int64)
    remaining = int(total)
    while remaining > 0:
        room = cap - alloc
        ww = np.where(room > 0, w, 0.0)
        if ww.sum() <= 0:
            ww = room.astype(np.float64)
        ideal = remaining * ww / ww.sum()
        share = np.floor(ideal).astype(np.int64)
        extra = remaining - int(share.sum())
        if extra > 0:
            share[np.argsort(-(ideal - share), kind="stable")[:extra]] += 1
        add = np.minimum(share, room)
        if add.sum() == 0:  # rounding corner case: one patch to the first group with room
            add[np.flatnonzero(room > 0)[0]] = 1
        alloc += add
        remaining -= int(add.sum())
    return alloc


# ---- bit cost grouping ------------------------------------------------------------------------------
def frame_bit_costs(packet_sizes: np.ndarray, frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, frames) per sampled frame: the packets of every frame after the previous sampled frame up
    to and including this one (for frame 0: from the start).  Frames after the last sample are unused."""
    sizes = np.asarray(packet_sizes, dtype=np.float64).ravel()
    ids = np.asarray(frame_ids, dtype=np.int64).ravel()
    if len(ids) == 0 or ids.min() < 0 or ids.max() >= len(sizes):
        raise ValueError(f"frame_ids must index into packet_sizes (length {len(sizes)})")
    if (np.diff(ids) < 0).any():
        raise ValueError("frame_ids must be non-decreasing")
    if (sizes < 0).any() or not np.isfinite(sizes).all():
        raise ValueError("packet_sizes must be finite and >= 0")
    csum = np.concatenate([[0.0], np.cumsum(sizes)])
    end = ids + 1
    start = np.concatenate([[0], end[:-1]])
    start = np.minimum(start, end)  # a repeated frame id (short video) owns no packets
    return csum[end] - csum[start], (end - start).astype(np.int64)


def bitcost_groups(bits: np.ndarray, num_frames_per_sample: np.ndarray, max_groups: int) -> np.ndarray:
    """int64 [T] contiguous group ids 0..G-1, G = min(max_groups, T).

    The bit rate per sampled frame (bytes / frames in its window) is fitted by the piecewise-constant
    function with G pieces of least squared error (exact dynamic programme, O(G*T^2)); the pieces are the
    groups, so cuts land on jumps of the rate (scene cuts, motion onsets, spikes).  A negligible
    length**2 penalty splits stretches of equal rate into near-equal groups.  Every group is non-empty.
    """
    rate = np.asarray(bits, np.float64) / np.maximum(np.asarray(num_frames_per_sample), 1)
    t = len(rate)
    g = max(1, min(int(max_groups), t))
    x = rate / rate.mean() if rate.mean() > 0 else rate
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    i, j = np.arange(t + 1)[:, None], np.arange(t + 1)[None, :]
    n = np.maximum(j - i, 1)
    cost = (s2[j] - s2[i]) - (s1[j] - s1[i]) ** 2 / n + _BALANCE * n * n
    cost = np.where(j > i, np.maximum(cost, 0.0), np.inf)  # cost[i, j]: one group over frames i..j-1
    best = [cost[0]]  # best[k][j]: frames 0..j-1 in k+1 groups
    back = []
    for _ in range(1, g):
        total = best[-1][:, None] + cost
        back.append(np.argmin(total, axis=0))
        best.append(total[back[-1], np.arange(t + 1)])
    cuts, end = [], t
    for arg in reversed(back):
        end = int(arg[end])
        cuts.append(end)
    labels = np.zeros(t, dtype=np.int64)
    for c in cuts:
        labels[c:] += 1
    return labels


# ---- picking ----------------------------------------------------------------------------------------
def _frame_patches(frames: np.ndarray, per_frame: int) -> np.ndarray:
    """Flat (t, h, w) indices of every patch of ``frames``, ascending if ``frames`` is."""
    return (np.asarray(frames, np.int64)[:, None] * per_frame + np.arange(per_frame)).ravel()


def _top_k(flat_scores: np.ndarray, frames: np.ndarray, per_frame: int, k: int) -> np.ndarray:
    """Flat indices of the k best patches of ``frames`` (ties: lower flat index first)."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = _frame_patches(frames, per_frame)
    return idx[np.argsort(-flat_scores[idx], kind="stable")[:k]]


def fallback_patches(candidates: np.ndarray, per_frame: int, k: int) -> np.ndarray:
    """Static fallback: flat indices of k patches on uniformly spaced candidate frames.

    F = ceil(k / per_frame) frames at the centres of F equal slices of ``candidates``; all are dense
    except the last one, which gets the k - (F-1)*per_frame leftover patches spread evenly over it.
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    f = -(-k // per_frame)
    picks = candidates[((np.arange(f) + 0.5) * len(candidates) / f).astype(np.int64)]
    rest = k - (f - 1) * per_frame
    spread = ((np.arange(rest) + 0.5) * per_frame / rest).astype(np.int64)
    return np.concatenate([_frame_patches(picks[:-1], per_frame), picks[-1] * per_frame + spread])


def _grouped_top_k(
    flat: np.ndarray,
    labels: np.ndarray,
    candidates: np.ndarray,
    weights: np.ndarray,
    per_frame: int,
    k: int,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """Allocate k over groups (``labels`` per frame) by ``weights``, then top-k inside each group.
    ``eligible`` (bool over the flat patches of ``candidates``) caps each group at its eligible patches."""
    ng = int(labels.max()) + 1
    if eligible is None:
        capacity = np.bincount(labels[candidates], minlength=ng) * per_frame
    else:
        capacity = np.bincount(np.repeat(labels[candidates], per_frame)[eligible], minlength=ng)
    shares = allocate(k, weights, capacity)
    picked = [
        _top_k(flat, candidates[labels[candidates] == gi], per_frame, int(s)) for gi, s in enumerate(shares)
    ]
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def select_patches(
    scores: np.ndarray,
    cfg: SelectConfig | None = None,
    *,
    pict_types: Sequence[str] | None = None,
    packet_sizes: np.ndarray | None = None,
    frame_ids: np.ndarray | None = None,
    static: bool | None = None,
) -> Selection:
    """Pick patches from ``scores`` [T, gh, gw] per ``cfg``; see the module docstring.

    ``static`` overrides the score-threshold test for the static fallback (the pipeline decides it
    from the raw signals with :func:`encoder.codec.saliency.is_static`).
    """
    cfg = cfg or SelectConfig()
    cfg.validate()
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 3 or s.size == 0:
        raise ValueError(f"scores must be a non-empty [T, gh, gw] array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    t, gh, gw = s.shape
    per_frame = gh * gw
    k = resolve_budget(cfg.budget, t * per_frame)
    ctx = context_frames(t, cfg.context, pict_types)
    if len(ctx) * per_frame > k:
        raise ValueError(
            f"context frames alone need {len(ctx) * per_frame} patches ({len(ctx)} frames x {per_frame}) "
            f"but the budget is {k}; raise the budget or use context='none'"
        )
    remaining = k - len(ctx) * per_frame
    candidates = np.setdiff1d(np.arange(t, dtype=np.int64), ctx)
    flat = s.reshape(-1)
    groups = None
    cand_scores = flat[_frame_patches(candidates, per_frame)]
    cand_max = float(cand_scores.max()) if len(candidates) else np.inf
    static = remaining > 0 and (cand_max <= cfg.static_threshold if static is None else static)
    eligible = None
    if cfg.min_score is not None and not static and len(candidates):
        eligible = cand_scores > cfg.min_score
        remaining = min(remaining, int(eligible.sum()))
    if cfg.mode == "bitcost":
        if packet_sizes is None or frame_ids is None:
            raise ValueError("mode='bitcost' needs packet_sizes and frame_ids")
        if len(np.asarray(frame_ids).ravel()) != t:
            raise ValueError(f"frame_ids has {len(np.asarray(frame_ids).ravel())} entries for {t} frames")
    if static:
        chosen = fallback_patches(candidates, per_frame, remaining)
    elif cfg.mode == "global":
        chosen = _top_k(flat, candidates, per_frame, remaining)
    elif cfg.mode == "buckets":
        labels = (np.arange(t) * min(int(cfg.num_buckets), t)) // t
        counts = np.bincount(labels[candidates], minlength=int(labels.max()) + 1)
        chosen = _grouped_top_k(
            flat, labels, candidates, counts.astype(np.float64), per_frame, remaining, eligible
        )
    else:
        bits, span = frame_bit_costs(packet_sizes, frame_ids)
        groups = bitcost_groups(bits, span, cfg.max_groups)
        cand_bits = np.zeros(t)
        cand_bits[candidates] = bits[candidates]
        weights = np.bincount(groups, weights=cand_bits, minlength=int(groups.max()) + 1)
        chosen = _grouped_top_k(flat, groups, candidates, weights, per_frame, remaining, eligible)
    idx = np.sort(np.concatenate([_frame_patches(ctx, per_frame), chosen]))
    fi, row, col = np.unravel_index(idx, s.shape)
    return Selection(
        frame_index=fi.astype(np.int64),
        row=row.astype(np.int64),
        col=col.astype(np.int64),
        score=flat[idx].astype(np.float32),
        is_context=np.isin(fi, ctx),
        fallback=bool(static),
        groups=groups,
        capped=isinstance(cfg.budget, (int, np.integer))
        and not isinstance(cfg.budget, bool)
        and cfg.budget > t * per_frame,
    )


def random_patches(sel: Selection, scores: np.ndarray, rng: np.random.Generator) -> Selection:
    """The intervention control of a codec selection: the same context patches, and as many other
    patches as ``sel`` holds, drawn uniformly without replacement from the non-context patches of the
    frames after frame 0 (frames 1..T-1): what codec scoring adds over chance at the same count."""
    s = np.asarray(scores, dtype=np.float32)
    t, gh, gw = s.shape
    per_frame = gh * gw
    ctx_frames = np.unique(sel.frame_index[sel.is_context])
    pool = np.setdiff1d(np.arange(1, t, dtype=np.int64), ctx_frames)
    k = int((~sel.is_context).sum())
    if k > len(pool) * per_frame:
        raise ValueError(f"{k} random patches asked from {len(pool) * per_frame} candidates")
    flat_ctx = (sel.frame_index * per_frame + sel.row * gw + sel.col)[sel.is_context]
    drawn = _frame_patches(pool, per_frame)[rng.choice(len(pool) * per_frame, size=k, replace=False)]
    idx = np.sort(np.concatenate([flat_ctx, drawn]))
    fi, row, col = np.unravel_index(idx, s.shape)
    return Selection(
        frame_index=fi.astype(np.int64),
        row=row.astype(np.int64),
        col=col.astype(np.int64),
        score=s.reshape(-1)[idx].astype(np.float32),
        is_context=np.isin(fi, ctx_frames),
        fallback=sel.fallback,
        groups=sel.groups,
        capped=sel.capped,
    )
