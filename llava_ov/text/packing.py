"""Sequence packing of :class:`TokenizedSample` s, and the padded collation it replaces.

Packed layout (batch dim 1): samples are concatenated into ``input_ids [1, L]`` with ``position_ids``
restarting at 0 for every sample and ``cu_seqlens`` (int32, ``[0, l0, l0+l1, ..., L]``).

How attention stays inside each sample, without patching transformers:

* ``flash_attention_2`` / ``flash_attention_3``: transformers runs the varlen kernel when it gets
  ``cu_seq_lens_q/k`` + ``max_length_q/k`` (we pass them, as ``DataCollatorWithFlattening`` does), or,
  failing those, infers them from restarted ``position_ids`` when the batch dim is 1.
* ``sdpa`` / ``eager`` (CPU): ``transformers.masking_utils.create_causal_mask`` detects packing from
  ``position_ids`` (``find_packed_sequence_indices``: a new sequence starts wherever the position
  does not increase by exactly 1) and builds a block-diagonal causal mask. It does so only when
  ``attention_mask is None`` **and** ``past_key_values is None``, so ``use_cache=False`` is mandatory
  (Qwen3's config defaults to ``use_cache=True``, which would create an empty ``DynamicCache`` and
  silently fall back to a plain causal mask across samples). :func:`model_inputs` sets it.
  tests/llava_ov/text/test_packing.py checks the result against the padded batch (logits, loss, grads) and
  against an explicit mask from :func:`block_causal_mask`.

Labels at sample boundaries: transformers' causal-LM loss shifts labels left by one (the target of
token t is ``labels[t + 1]``, with -100 appended at the end), so the last token of sample k would be
trained to predict the first token of sample k+1. :func:`collate_packed` sets the label of every
sample's first token to -100. That is loss-neutral (nothing predicts a sample's first token in the
unpacked batch either; with ChatML it is ``<|im_start|>``, already -100).

Samples longer than ``max_tokens``: :func:`plan_packs` raises by default (tokenize with
``max_length <= max_tokens`` upstream) or, with ``oversize="drop"``, leaves them out and lists them
in ``PackPlan.dropped``. Nothing is truncated here: truncation is media-aware and belongs to
tokenization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from llava_ov.text.conversation import IGNORE_INDEX, TokenizedSample

Span = tuple[int, int, str]


@dataclass
class PackPlan:
    bins: list[list[int]]  # indices into the input list, ascending within each bin
    dropped: list[int] = field(default_factory=list)  # oversize samples (oversize="drop")


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [1, L] long
    labels: torch.Tensor  # [1, L] long
    position_ids: torch.Tensor  # [1, L] long, restarting at 0 per sample
    cu_seqlens: torch.Tensor  # [n + 1] int32
    max_seqlen: int
    media_spans: list[Span]  # (start, end, kind) in packed coordinates, in sample then media order

    @property
    def num_samples(self) -> int:
        return int(self.cu_seqlens.numel()) - 1


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # [B, L] long, right-padded with pad_token_id
    labels: torch.Tensor  # [B, L] long, -100 on padding
    attention_mask: torch.Tensor  # [B, L] long, 1 = real token
    media_spans: list[list[Span]]  # per row


def plan_packs(
    lengths: Sequence[int],
    max_tokens: int,
    strategy: Literal["ffd", "sequential"] = "ffd",
    oversize: Literal["error", "drop"] = "error",
) -> PackPlan:
    """Group sample indices into bins of total length <= ``max_tokens``.

    ``ffd``: first-fit-decreasing (longest first, each into the first bin with room): fewest bins.
    ``sequential``: keep data order, open a new bin when the next sample does not fit.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
    if too_long and oversize == "error":
        raise ValueError(
            f"{len(too_long)} sample(s) longer than max_tokens={max_tokens} (indices {too_long[:8]}, "
            f"lengths {[lengths[i] for i in too_long[:8]]}); tokenize with max_length <= max_tokens "
            "or pass oversize='drop'"
        )
    dropped = set(too_long)
    order = [i for i in range(len(lengths)) if i not in dropped]
    if strategy == "ffd":
        order.sort(key=lambda i: -lengths[i])
    elif strategy != "sequential":
        raise ValueError(f"unknown packing strategy {strategy!r}")
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if strategy == "ffd":
            slot = next((b for b, r in enumerate(room) if r >= n), None)
        else:
            slot = len(room) - 1 if room and room[-1] >= n else None
        if slot is None:
            bins.append([])
            room.append(max_tokens)
            slot = len(bins) - 1
        bins[slot].append(i)
        room[slot] -= n
    return PackPlan([sorted(b) for b in bins], sorted(dropped))


def pack_samples(
    samples: Sequence[TokenizedSample],
    max_tokens: int,
    strategy: Literal["ffd", "sequential"] = "ffd",
    oversize: Literal["error", "drop"] = "error",
) -> list[PackedBatch]:
    """Plan and collate: one :class:`PackedBatch` per bin."""
    plan = plan_packs([len(s) for s in samples], max_tokens, strategy, oversize)
    return [collate_packed([samples[i] for i in b], max_tokens) for b in plan.bins]


def collate_packed(samples: Sequence[TokenizedSample], max_tokens: int | None = None) -> PackedBatch:
    """Concatenate samples into one packed sequence (see module docstring for positions and labels)."""
    if not samples:
        raise ValueError("collate_packed needs at least one sample")
    lengths = [len(s) for s in samples]
    if min(lengths) < 1:
        raise ValueError("cannot pack an empty sample")
    total = sum(lengths)
    if max_tokens is not None and total > max_tokens:
        raise ValueError(f"packed length {total} exceeds max_tokens={max_tokens}")
    starts = torch.tensor([0, *lengths], dtype=torch.long).cumsum(0)
    labels = torch.cat([s.labels for s in samples]).clone()
    labels[starts[:-1]] = IGNORE_INDEX  # no target crosses a sample boundary (shift-aware)
    position_ids = torch.cat([torch.arange(n, dtype=torch.long) for n in lengths])
    spans = [(a + off, b + off, k) for s, off in zip(samples, starts.tolist()) for a, b, k in s.media_spans]
    return PackedBatch(
        input_ids=torch.cat([s.input_ids for s in samples]).unsqueeze(0),
        labels=labels.unsqueeze(0),
        position_ids=position_ids.unsqueeze(0),
        cu_seqlens=starts.to(torch.int32),
        max_seqlen=max(lengths),
        media_spans=spans,
    )


def collate_padded(
    samples: Sequence[TokenizedSample], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> PaddedBatch:
    """Right-padded batch ``[B, L]`` with ``attention_mask`` (the unpacked reference layout)."""
    if not samples:
        raise ValueError("collate_padded needs at least one sample")
    width = max(len(s) for s in samples)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = len(samples)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s)
        input_ids[row, :n] = s.input_ids
        labels[row, :n] = s.labels
        attention_mask[row, :n] = 1
    return PaddedBatch(input_ids, labels, attention_mask, [list(s.media_spans) for s in samples])


def model_inputs(batch: PackedBatch | PaddedBatch, attn_implementation: str = "sdpa") -> dict[str, Any]:
    """Keyword arguments for a transformers causal LM (e.g. ``Qwen3ForCausalLM``) forward pass.

    Packed: no ``attention_mask`` (transformers must see ``None`` to detect packing), restarted
    ``position_ids``, ``use_cache=False``; flash-attention and ``auto`` (the packed varlen attention of
    :mod:`llava_ov.model.attention`) also get the varlen kwargs (``cu_seq_lens_q/k``, ``max_length_q/k``).
    Callers feeding ``inputs_embeds`` instead of ``input_ids`` just swap that key.
    """
    if isinstance(batch, PaddedBatch):
        return {
            "input_ids": batch.input_ids,
            "labels": batch.labels,
            "attention_mask": batch.attention_mask,
            "use_cache": False,
        }
    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "labels": batch.labels,
        "position_ids": batch.position_ids,
        "use_cache": False,
    }
    if attn_implementation not in ("sdpa", "eager"):  # flash / auto (packed varlen) read the boundaries
        kwargs |= {
            "cu_seq_lens_q": batch.cu_seqlens,
            "cu_seq_lens_k": batch.cu_seqlens,
            "max_length_q": batch.max_seqlen,
            "max_length_k": batch.max_seqlen,
        }
    return kwargs


def block_causal_mask(cu_seqlens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Explicit additive 4D mask ``[1, 1, L, L]`` (0 = attend, dtype min = blocked): causal within each
    packed sample, nothing across samples. Not needed with transformers (see module docstring); it is
    the reference the tests check transformers' implicit packed mask against, and a fallback for
    attention code that does not detect packing from ``position_ids``.
    """
    bounds = cu_seqlens.to(torch.long)
    total = int(bounds[-1])
    seq_id = torch.repeat_interleave(torch.arange(bounds.numel() - 1), bounds.diff())
    idx = torch.arange(total)
    allowed = (seq_id[:, None] == seq_id[None, :]) & (idx[:, None] >= idx[None, :])
    mask = torch.zeros((total, total), dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]
