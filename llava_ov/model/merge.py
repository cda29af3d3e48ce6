"""2×2 spatial merge of patch features, and the picklable LLM-token counter the data side uses.

Merge rule (``merge=2``): the patches of one media item are grouped by ``(t, h // 2, w // 2)``; each
group becomes one LLM token whose input is the concatenation of its four slots
``(h % 2, w % 2) = (0,0), (0,1), (1,0), (1,1)`` (``4 · D_v`` features). Groups are ordered by
``(t, h // 2, w // 2)``. Frames with an odd number of patch rows / columns get zero-filled slots on
the last row / column.

Only *dense* media can be merged: every frame (t) of the item must hold all patches of its
``[0, H_t) × [0, W_t)`` grid (images, uniformly sampled frames, collages, and codec clips that fell
back to dense frames). A sparse codec selection raises ``ValueError``: merging scattered patches
with zero-filled neighbours would feed the projector a different input distribution for the same
content; use ``projector.merge=1`` for codec data.

Both sides use :func:`merge_plan`: the model to group features, :class:`TokenCounter` (in DataLoader
workers) to reserve the same number of placeholder tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

SLOTS = 4  # 2 × 2


@dataclass(frozen=True)
class MergePlan:
    group: Tensor  # long [N]: merged-token index of each patch (global over the batch)
    slot: Tensor  # long [N]: (h % 2) * 2 + (w % 2)
    counts: list[int]  # merged tokens per media item

    @property
    def num_groups(self) -> int:
        return sum(self.counts)


def _check_dense(pos: Tensor, index: int) -> None:
    t, h, w = pos.unbind(1)
    frames, inverse = torch.unique(t, return_inverse=True)
    rows = torch.zeros(len(frames), dtype=torch.long).scatter_reduce(0, inverse, h, "amax") + 1
    cols = torch.zeros(len(frames), dtype=torch.long).scatter_reduce(0, inverse, w, "amax") + 1
    expected = int((rows * cols).sum())
    key = (t * (int(h.max()) + 1) + h) * (int(w.max()) + 1) + w
    unique = int(torch.unique(key).numel())
    if unique != len(pos) or expected != len(pos):
        raise ValueError(
            f"projector merge=2 needs dense media (every patch of each frame), but media item {index} has "
            f"{unique} distinct patches where its {len(frames)} frame(s) span {expected} grid cells "
            "(a sparse codec selection?); use projector.merge=1 for codec-selected media"
        )


def _item_plan(pos: Tensor, index: int) -> tuple[Tensor, Tensor, int]:
    """Local group ids (ordered by (t, h//2, w//2)), slots and group count of one media item."""
    pos = pos.to(torch.long)
    _check_dense(pos, index)
    t, h, w = pos.unbind(1)
    half_h, half_w = int(h.max()) // 2 + 1, int(w.max()) // 2 + 1
    key = (t * half_h + h // 2) * half_w + w // 2
    groups, inverse = torch.unique(key, sorted=True, return_inverse=True)
    return inverse, (h % 2) * 2 + (w % 2), int(groups.numel())


def merge_plan(positions: Tensor, cu_seqlens: Tensor) -> MergePlan:
    """Group the packed patches of every media item (see module docstring). CPU, small ints only."""
    positions = positions.detach().cpu()
    bounds = [int(c) for c in cu_seqlens.tolist()]
    groups, slots, counts = [], [], []
    offset = 0
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b <= a:
            raise ValueError(f"media item {i} has no patches")
        local, slot, n = _item_plan(positions[a:b], i)
        groups.append(local + offset)
        slots.append(slot)
        counts.append(n)
        offset += n
    empty = torch.zeros(0, dtype=torch.long)
    return MergePlan(torch.cat(groups) if groups else empty, torch.cat(slots) if slots else empty, counts)


def apply_merge(features: Tensor, plan: MergePlan) -> Tensor:
    """``[N, D]`` patch features → ``[G, 4·D]`` merged features (missing slots are zeros)."""
    group, slot = plan.group.to(features.device), plan.slot.to(features.device)
    out = features.new_zeros(plan.num_groups, SLOTS, features.shape[-1])
    out = out.index_put((group, slot), features)
    return out.reshape(plan.num_groups, SLOTS * features.shape[-1])


def dense_grid(positions: Tensor) -> tuple[int, int, int]:
    """(frames, rows, cols) of a dense media item whose frames share one grid; ValueError otherwise."""
    pos = positions.to(torch.long)
    t, h, w = pos.unbind(1)
    frames, rows, cols = int(torch.unique(t).numel()), int(h.max()) + 1, int(w.max()) + 1
    if frames * rows * cols != len(pos):
        raise ValueError(
            f"a tower that merges patches itself needs dense frames of one grid (modes frames / "
            f"image), but the media item has {len(pos)} patches for {frames} frame(s) of "
            f"{rows}x{cols}"
        )
    return frames, rows, cols


@dataclass(frozen=True)
class TokenCounter:
    """``PatchSelection`` → number of LLM tokens it becomes. Small and picklable (no model inside):
    pass it as ``tokens_for`` to :func:`llava_ov.data.make_item` in DataLoader workers.

    ``merge``: the projector's merge; ``frames_per_token`` / ``tower_merge``: the reduction of a tower
    that groups patches itself (:class:`llava_ov.model.towers.TowerSpec`): a dense item of T frames of
    gh × gw patches gives ``ceil(T / frames_per_token) · ceil(gh / tower_merge) · ceil(gw / tower_merge)``
    tower tokens (an odd last tubelet repeats its frame, odd rows / columns are padded)."""

    merge: int = 1
    frames_per_token: int = 1
    tower_merge: int = 1

    def __call__(self, selection: Any) -> int:
        n = len(selection.positions)
        if n == 0:
            return 0
        positions = torch.as_tensor(selection.positions)
        if self.frames_per_token > 1 or self.tower_merge > 1:
            frames, rows, cols = dense_grid(positions)
            m, f = self.tower_merge, self.frames_per_token
            tokens = -(-frames // f) * -(-rows // m) * -(-cols // m)
            if self.merge != 1:
                raise ValueError("a tower that merges patches itself is used with projector merge=1")
            return tokens
        if self.merge == 1:
            return n
        return merge_plan(positions, torch.tensor([0, n])).num_groups


__all__ = ["SLOTS", "MergePlan", "TokenCounter", "apply_merge", "dense_grid", "merge_plan"]
