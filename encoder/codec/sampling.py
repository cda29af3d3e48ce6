"""Which frames of a stream a clip samples: uniform in time, optionally aligned to keyframes."""

from __future__ import annotations

import numpy as np


def sample_positions(times: np.ndarray, t: int) -> np.ndarray:
    """T strictly increasing positions into `times` nearest to T uniformly spaced instants (all if fewer)."""
    n = len(times)
    if t >= n:
        return np.arange(n)
    targets = np.linspace(times[0], times[-1], t)
    right = np.clip(np.searchsorted(times, targets), 1, n - 1)
    left = right - 1
    pos = np.where(targets - times[left] <= times[right] - targets, left, right)
    for k in range(1, t):  # make strictly increasing, then keep room for the tail
        pos[k] = max(pos[k], pos[k - 1] + 1)
    for k in range(t - 1, -1, -1):
        pos[k] = min(pos[k], n - t + k, pos[k + 1] - 1 if k + 1 < t else n - 1)
    return pos


def snap_to_keyframes(
    keyframe: np.ndarray, window: np.ndarray, wanted: np.ndarray, sampling: str, with_reference: bool = True
) -> np.ndarray:
    """``sampling`` keyframe / auto: each sampled frame (presentation index) moved to the frame after its
    nearest keyframe (the keyframe itself without ``with_reference``) when that is within a quarter of
    the sample spacing; auto only when samples lie more than two GOPs apart. ``keyframe``: bool [N]."""
    if sampling == "uniform" or len(wanted) < 2:
        return wanted
    keys = np.flatnonzero(keyframe[window[0] : window[-1] + 1]) + window[0]
    spacing = float(np.median(np.diff(wanted)))
    if len(keys) < 2 or (sampling == "auto" and spacing <= 2 * float(np.median(np.diff(keys)))):
        return wanted
    step = int(with_reference)
    out = wanted.copy()
    for i, w in enumerate(wanted):
        k = keys[np.argmin(np.abs(keys - w))]
        cand = min(int(k) + step, int(window[-1]))
        if abs(cand - w) <= spacing / 4 and (i == 0 or cand > out[i - 1]):
            out[i] = cand
    return out if np.all(np.diff(out) > 0) else wanted


__all__ = ["sample_positions", "snap_to_keyframes"]
