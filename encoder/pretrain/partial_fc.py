"""Partial-FC margin softmax: cluster discrimination against a bank of centres sharded over ranks.

Each sample's normalised embedding is scored against normalised concept centres (the k-means bank) with
an additive cosine margin (CosFace: ``s · (cos − m)`` for the target, ``s · cos`` otherwise). The bank
is split over the ranks in contiguous, possibly uneven ranges (:func:`shard_bounds`); embeddings and
labels are all-gathered (uneven per-rank batches, zero included); each rank scores every gathered
sample against its local centres — all of them, or a sample of ``sample_rate`` of them with every
positive of the step kept — and the softmax's max and sum are all-reduced, so no rank ever holds the
full logit matrix.

Multi-label: a sample stores L labels (its nearest centres; ``-1`` pads); per step ``num_labels`` of
them are drawn on the owning rank and each drawn label is one softmax, averaged. The sample's other
stored positives are removed from every one of its softmaxes (never counted as negatives).

Gradients: the all-gather's backward sums the embedding gradients over ranks (every rank's centres
contribute); the all-reduce of the softmax sums has an identity backward (every rank holds the same
loss, so each rank's local terms get the gradient once). Every rank returns the same loss value; the
gradient of a rank's local embeddings is then the gradient of that loss (no averaging over ranks — a
data-parallel wrapper that averages gradients must scale by the world size). The centres are this
module's own parameter and are never replicated: keep them out of a data-parallel engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from encoder.typed_config import ConfigError


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(num_classes: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges of the bank per rank (the first ``num_classes % world`` get one
    more)."""
    if num_classes < 1:
        raise ConfigError("the concept bank is empty (0 centres)")
    if world_size > num_classes:
        raise ConfigError(f"{world_size} ranks but only {num_classes} centres: every rank needs at least one")
    base, extra = divmod(num_classes, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        end = start + base + (r < extra)
        bounds.append((start, end))
        start = end
    return bounds


class _GatherRows(torch.autograd.Function):
    """All-gather of [b_r, ...] rows (uneven b_r); backward: the gradient rows of this rank, summed
    over ranks."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:
        rank, world = _dist()
        ctx.sizes, ctx.rank = sizes, rank
        if world == 1:
            return x.clone()
        pad = max(sizes)
        buf = x.new_zeros((pad, *x.shape[1:]))
        buf[: x.shape[0]] = x
        out = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(out, buf.contiguous())
        return torch.cat([o[:n] for o, n in zip(out, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        if len(ctx.sizes) == 1:
            return grad, None
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's logits touched every row
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]].clone(), None


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with an identity backward: each rank holds the same loss (see the module doc)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        if _dist()[1] > 1:
            dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad


def gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    return _GatherRows.apply(x, sizes)


def gathered_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's row count (one small all-gather)."""
    _, world = _dist()
    if world == 1:
        return [n]
    t = torch.tensor([n], device=device, dtype=torch.long)
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return [int(o) for o in out]


def draw_labels(labels: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """[B, L] stored labels (-1 pads) → [B, k] of them drawn at random (valid first; -1 where a row
    has fewer)."""
    if labels.shape[1] == 0:
        return labels.new_full((labels.shape[0], k), -1)
    keys = torch.rand(labels.shape, generator=generator, device="cpu").to(labels.device)
    keys = keys.masked_fill(labels < 0, 2.0)  # pads sort last
    order = keys.argsort(dim=1)[:, :k]
    drawn = labels.gather(1, order)
    if drawn.shape[1] < k:
        drawn = torch.cat([drawn, drawn.new_full((drawn.shape[0], k - drawn.shape[1]), -1)], 1)
    return drawn


@dataclass
class PartialFCOutput:
    loss: Tensor  # scalar, the same on every rank
    num_samples: int  # gathered samples with at least one drawn label
    num_sampled: int  # centres of this rank scored this step


class PartialFC(nn.Module):
    """This rank's shard of a ``num_classes`` × ``dim`` bank and the sharded margin softmax over it."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        sample_rate: float = 1.0,
        scale: float = 64.0,
        margin: float = 0.3,
        num_labels: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {num_labels}")
        r, w = _dist()
        self.rank, self.world_size = (r if rank is None else rank), (w if world_size is None else world_size)
        self.num_classes, self.dim = num_classes, dim
        self.bounds = shard_bounds(num_classes, self.world_size)
        self.start, self.end = self.bounds[self.rank]
        self.sample_rate, self.scale, self.margin, self.num_labels = sample_rate, scale, margin, num_labels
        local = self.end - self.start
        if init is not None:  # the full bank (e.g. the k-means centres): keep this rank's rows
            if tuple(init.shape) != (num_classes, dim):
                raise ConfigError(
                    f"initial centres {tuple(init.shape)} do not match the bank ({num_classes}, {dim})"
                )
            weight = init[self.start : self.end].detach().clone().float()
        else:
            weight = torch.randn(local, dim) * 0.01
        self.weight = nn.Parameter(weight)

    @property
    def num_local(self) -> int:
        return self.end - self.start

    def num_sample(self) -> int:
        return (
            self.num_local
            if self.sample_rate >= 1.0
            else max(1, math.ceil(self.sample_rate * self.num_local))
        )

    def sample(self, positives: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sorted local indices scored this step: every local positive, then random others up to
        :meth:`num_sample` (all of them at rate 1.0)."""
        n = self.num_local
        if self.sample_rate >= 1.0:
            return torch.arange(n, device=self.weight.device)
        keys = torch.rand(n, generator=generator, device="cpu").to(self.weight.device)
        keys[positives] = 2.0  # positives first
        k = max(self.num_sample(), int(positives.numel()))
        return keys.topk(k).indices.sort().values

    def forward(
        self, embeddings: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> PartialFCOutput:
        """``embeddings`` [b, D] and stored ``labels`` [b, L] (global centre ids, -1 pads) of this rank
        (collective: every rank calls it, b may differ and be 0)."""
        if embeddings.shape[0] != labels.shape[0] or embeddings.ndim != 2 or labels.ndim != 2:
            raise ValueError(
                f"embeddings {tuple(embeddings.shape)} and labels {tuple(labels.shape)} do not match"
            )
        labels = labels.to(embeddings.device, torch.long)
        if labels.numel() and (int(labels.max()) >= self.num_classes or int(labels.min()) < -1):
            bad = labels[(labels >= self.num_classes) | (labels < -1)][0]
            raise ValueError(f"label {int(bad)} is outside the concept bank of {self.num_classes} centres")
        drawn = draw_labels(labels, self.num_labels, generator)
        sizes = gathered_sizes(embeddings.shape[0], embeddings.device)
        emb = gather_rows(F.normalize(embeddings.float(), dim=1), sizes)  # [N, D]
        stored = gather_rows(labels, sizes) if sum(sizes) else labels
        target = gather_rows(drawn, sizes) if sum(sizes) else drawn
        n = emb.shape[0]
        valid = target >= 0  # [N, k]
        num = int(valid.any(1).sum())
        if n == 0 or not bool(valid.any()):
            return PartialFCOutput(self.weight.sum() * 0.0 + embeddings.sum() * 0.0, 0, 0)

        local_t = target - self.start  # drawn labels in local coordinates
        mine = valid & (local_t >= 0) & (local_t < self.num_local)
        index = self.sample(torch.unique(local_t[mine]), generator)  # [S] local ids scored this step
        w = F.normalize(self.weight[index], dim=1)
        cos = emb @ w.t()  # [N, S]
        # which scored centres are a positive (stored, any slot) of each sample: they are never negatives
        pos_of = torch.full((self.num_local,), -1, device=emb.device, dtype=torch.long)
        pos_of[index] = torch.arange(index.numel(), device=emb.device)
        local_s = stored - self.start
        in_shard = (stored >= 0) & (local_s >= 0) & (local_s < self.num_local)
        col = torch.where(in_shard, pos_of[local_s.clamp(0, self.num_local - 1)], -1)  # [N, L] column or -1
        is_pos = torch.zeros_like(cos, dtype=torch.bool)
        rows = torch.arange(n, device=emb.device)[:, None].expand_as(col)
        is_pos[rows[col >= 0], col[col >= 0]] = True

        s, m = self.scale, self.margin
        neg_logits = (s * cos).masked_fill(is_pos, float("-inf"))
        # the target logit of each slot, from the rank owning it (0 elsewhere, summed over ranks)
        tcol = torch.where(mine, pos_of[local_t.clamp(0, self.num_local - 1)], 0)
        t_local = torch.where(mine, s * (cos.gather(1, tcol) - m), torch.zeros_like(tcol, dtype=cos.dtype))
        z = _SumOverRanks.apply(t_local)  # [N, k]
        with torch.no_grad():  # a shift for exp(); it cancels exactly in the loss
            row_max = torch.maximum(
                neg_logits.max(1).values, z.masked_fill(~valid, float("-inf")).max(1).values
            )
            if self.world_size > 1:
                dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
            row_max = torch.nan_to_num(row_max, neginf=0.0)
        neg_sum = _SumOverRanks.apply((neg_logits - row_max[:, None]).exp().sum(1))  # [N]
        denom = neg_sum[:, None] + (z - row_max[:, None]).exp()
        per_slot = denom.log() + row_max[:, None] - z  # −log softmax of the target
        loss = per_slot[valid].sum() / valid.sum()
        return PartialFCOutput(loss, num, int(index.numel()))


def dense_margin_softmax(
    embeddings: Tensor,
    centres: Tensor,
    stored: Tensor,
    drawn: Tensor,
    scale: float = 64.0,
    margin: float = 0.3,
) -> Tensor:
    """The same loss with the whole bank in one matrix (the reference the sharded version must equal)."""
    cos = F.normalize(embeddings.float(), dim=1) @ F.normalize(centres.float(), dim=1).t()
    losses = []
    for i in range(cos.shape[0]):
        others = [int(c) for c in stored[i] if c >= 0]
        for t in drawn[i]:
            if t < 0:
                continue
            logits = scale * cos[i].clone()
            logits[others] = float("-inf")
            logits[int(t)] = scale * (cos[i, int(t)] - margin)
            losses.append(torch.logsumexp(logits, 0) - logits[int(t)])
    return torch.stack(losses).mean()


__all__ = [
    "PartialFC",
    "PartialFCOutput",
    "dense_margin_softmax",
    "draw_labels",
    "gather_rows",
    "gathered_sizes",
    "shard_bounds",
]
