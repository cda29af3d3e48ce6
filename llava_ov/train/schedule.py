"""Learning-rate schedule: linear warmup then cosine / linear decay (or constant).

A pure function of the optimizer step, so a resumed run gets exactly the LRs of an uninterrupted one
without any scheduler state.
"""

from __future__ import annotations

import math

from llava_ov.train.config import OptimConfig


def warmup_steps(cfg: OptimConfig, max_steps: int) -> int:
    """Warmup length: ``cfg.warmup_steps`` or ``round(warmup_ratio · max_steps)``."""
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, max_steps)
    return min(round(cfg.warmup_ratio * max_steps), max_steps)


def lr_factor(
    step: int, max_steps: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the peak LR for optimizer step ``step`` (0-based, ``< max_steps``).

    Warmup: ``(step + 1) / warmup`` (the first step already moves; step ``warmup - 1`` is at the peak).
    Then ``constant`` stays at 1; ``cosine`` / ``linear`` go from 1 to ``min_ratio``, reached exactly at
    the last step ``max_steps - 1``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max_steps - warmup - 1
    progress = min(max((step - warmup) / span, 0.0), 1.0) if span > 0 else 1.0
    if schedule == "linear":
        shape = 1.0 - progress
    elif schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * shape


def stage_lr_factor(cfg: OptimConfig, step: int, max_steps: int) -> float:
    return lr_factor(step, max_steps, warmup_steps(cfg, max_steps), cfg.schedule, cfg.min_lr_ratio)


__all__ = ["lr_factor", "stage_lr_factor", "warmup_steps"]
