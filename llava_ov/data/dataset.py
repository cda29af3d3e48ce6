"""LMM training items and batches: tokenized text + the media packed for the vision tower.

An :class:`LMMItem` is one tokenized conversation whose i-th media span holds ``tokens_for(sel_i)``
pad tokens (the caller's function: the projector may merge patches into fewer tokens) and keeps the
:class:`PatchSelection` s. :func:`collate_items` turns items into an :class:`LMMBatch`:

* ``text``: a packed sequence (:func:`collate_packed`) or a padded batch (:func:`collate_padded`);
* ``media``: every patch of every media item concatenated in item then media order, as the vision
  tower wants them: ``pixels`` uint8 [N, 3, p, p] (not normalised: the model does it),
  ``positions`` int32 [N, 3] (t, h, w), ``cu_seqlens`` int32 [M + 1] patch offsets per media item,
  ``num_tokens`` int32 [M] pad tokens per media item (= the lengths of ``text.media_spans``, same
  order), ``grid_hw`` int32 [M, 2];
* ``skipped``: the :class:`Skipped` markers met while building the batch (count them with
  :class:`DataStats`).

:func:`pack_items` is the packing batcher: greedy in stream order, a batch closes when the next item
would exceed ``max_tokens`` text tokens or ``max_media_tokens`` vision-tower patches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from encoder.codec import PatchSelection
from llava_ov.data.samples import MediaSample
from llava_ov.data.stats import Skipped
from llava_ov.text.conversation import (
    ChatFormat,
    SampleTooLongError,
    TokenizedSample,
    build_prompt,
    tokenize_conversation,
)
from llava_ov.text.packing import PackedBatch, PaddedBatch, collate_packed, collate_padded

TokensFor = Callable[[PatchSelection], int]
MAX_PENDING_SKIPS = 64  # pack_items: skip markers sent on an empty batch when no item is pending
EVAL_FIELDS = ("qtype", "answer", "id")


def patch_tokens(sel: PatchSelection) -> int:
    """Default ``tokens_for``: one LLM token per patch (no merging in the projector)."""
    return len(sel)


@dataclass
class LMMItem:
    key: str
    tokens: TokenizedSample
    media: list[PatchSelection] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # qtype / answer / id when the record has them
    stream_pos: int = -1  # index of this item in its reader's mixture stream (set by MixtureDataset)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_patches(self) -> int:
        return sum(len(s) for s in self.media)


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in EVAL_FIELDS if k in record}


def make_item(
    sample: MediaSample | Skipped,
    tokenizer: PreTrainedTokenizerBase,
    tokens_for: TokensFor = patch_tokens,
    max_length: int | None = None,
    fmt: ChatFormat = ChatFormat(),
) -> LMMItem | Skipped:
    """Tokenize a decoded sample; too-long or malformed conversations become skip markers."""
    if isinstance(sample, Skipped):
        return sample
    try:
        counts = [int(tokens_for(s)) for s in sample.media]
        tokens = tokenize_conversation(sample.record, tokenizer, counts, sample.kinds, fmt, max_length)
    except SampleTooLongError as e:
        return Skipped(sample.key, "too_long", str(e)[:300], sample.source)
    except ValueError as e:
        return Skipped(sample.key, "bad_sample", str(e)[:300], sample.source)
    return LMMItem(sample.key, tokens, sample.media, sample.kinds, sample.source, _meta(sample.record))


def make_prompt_item(
    sample: MediaSample,
    tokenizer: PreTrainedTokenizerBase,
    tokens_for: TokensFor = patch_tokens,
    fmt: ChatFormat = ChatFormat(),
) -> LMMItem:
    """Evaluation item: the conversation up to (without) its last answer, as a generation prompt.
    The reference answer is ``meta["answer"]`` (or the dropped assistant turn's text)."""
    turns = sample.record.get("conversations", sample.record.get("messages"))
    if not turns or turns[-1].get("from", turns[-1].get("role")) not in ("gpt", "assistant"):
        raise ValueError(f"{sample.key}: the conversation does not end with an answer")
    last = turns[-1]
    meta = {"answer": last.get("value", last.get("content"))} | _meta(sample.record)
    counts = [int(tokens_for(s)) for s in sample.media]
    tokens = build_prompt(turns[:-1], tokenizer, counts, sample.kinds, fmt)
    return LMMItem(sample.key, tokens, sample.media, sample.kinds, sample.source, meta)


# ----------------------------------------------------------------------------- batches


@dataclass
class MediaBatch:
    pixels: torch.Tensor  # uint8 [N, 3, p, p]
    positions: torch.Tensor  # int32 [N, 3]
    cu_seqlens: torch.Tensor  # int32 [M + 1]
    num_tokens: torch.Tensor  # int32 [M] LLM tokens per media item
    grid_hw: torch.Tensor  # int32 [M, 2]
    kinds: list[str]
    patch_size: int

    @property
    def num_media(self) -> int:
        return len(self.kinds)

    @property
    def num_patches(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(kw_only=True)
class StreamBatch:
    """What the loader (``LMMLoader``) and the data stats read of a batch, the LMM's and pretraining's
    alike: the skip markers collected on the way and, for exact resume, the DataLoader worker that built
    the batch (logical id) and the mixture-stream position of the first item of that worker's next batch
    (None at the end of the stream). A subclass holds ``keys``, one per sample of the batch."""

    skipped: list[Skipped] = field(default_factory=list)
    worker: int = 0
    next_pos: int | None = None

    @property
    def num_samples(self) -> int:
        return len(self.keys)

    @property
    def is_empty(self) -> bool:
        return not self.keys


@dataclass
class LMMBatch(StreamBatch):
    text: PackedBatch | PaddedBatch | None  # None only for a batch of skip markers
    media: MediaBatch
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        if self.text is None:
            return 0
        if isinstance(self.text, PackedBatch):
            return int(self.text.input_ids.numel())
        return int(self.text.attention_mask.sum())


def pack_media(
    sels: Sequence[PatchSelection], kinds: Sequence[str], num_tokens: Sequence[int], default_patch: int = 14
) -> MediaBatch:
    """Selections (one media item each, in order) → the packed :class:`MediaBatch` a tower takes;
    ``num_tokens``: the LLM tokens of each item (placeholder counts)."""
    sizes = {s.patch_size for s in sels}
    if len(sizes) > 1:
        raise ValueError(f"media of one batch must share a patch size, got {sorted(sizes)}")
    if len(num_tokens) != len(sels) or len(kinds) != len(sels):
        raise ValueError(f"{len(num_tokens)} token counts / {len(kinds)} kinds for {len(sels)} media items")
    p = sizes.pop() if sizes else default_patch
    lengths = [len(s) for s in sels]
    pixels = np.concatenate([s.pixels for s in sels]) if sels else np.zeros((0, 3, p, p), np.uint8)
    positions = np.concatenate([s.positions for s in sels]) if sels else np.zeros((0, 3), np.int32)
    return MediaBatch(
        pixels=torch.from_numpy(pixels),
        positions=torch.from_numpy(positions),
        cu_seqlens=torch.tensor(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]), dtype=torch.int32),
        num_tokens=torch.tensor(list(num_tokens), dtype=torch.int32),
        grid_hw=torch.tensor([s.grid_hw for s in sels], dtype=torch.int32).reshape(-1, 2),
        kinds=list(kinds),
        patch_size=p,
    )


def collate_media(items: Sequence[LMMItem], default_patch: int = 14) -> MediaBatch:
    sels = [s for it in items for s in it.media]
    spans = [b - a for it in items for a, b, _ in it.tokens.media_spans]
    if len(spans) != len(sels):
        raise ValueError(f"{len(spans)} media spans for {len(sels)} media items")
    return pack_media(sels, [k for it in items for k in it.kinds], spans, default_patch)


def collate_items(
    items: Sequence[LMMItem | Skipped],
    padded: bool = False,
    pad_token_id: int = 0,
    max_tokens: int | None = None,
) -> LMMBatch:
    """Items (skip markers allowed, they are collected in ``skipped``) → :class:`LMMBatch`."""
    good = [it for it in items if isinstance(it, LMMItem)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    text: PackedBatch | PaddedBatch | None = None
    if good:
        samples = [it.tokens for it in good]
        text = collate_padded(samples, pad_token_id) if padded else collate_packed(samples, max_tokens)
    return LMMBatch(
        text=text,
        media=collate_media(good),
        keys=[it.key for it in good],
        sources=[it.source for it in good],
        meta=[it.meta for it in good],
        skipped=skipped,
    )


@dataclass
class LMMCollator:
    """``collate_fn`` for a DataLoader over items: ``padded`` picks the padded text layout."""

    padded: bool = False
    pad_token_id: int = 0

    def __call__(self, items: Sequence[LMMItem | Skipped]) -> LMMBatch:
        return collate_items(items, self.padded, self.pad_token_id)


def pack_items(
    stream: Iterable[LMMItem | Skipped],
    max_tokens: int,
    max_media_tokens: int | None = None,
    collator: LMMCollator = LMMCollator(),
    max_samples: int | None = None,
) -> Iterator[LMMBatch]:
    """Greedy packing in stream order (see module docstring).

    Items that alone exceed ``max_tokens`` / ``max_media_tokens`` become ``too_long`` skips. A run of
    :data:`MAX_PENDING_SKIPS` markers with no batch in sight leaves on an empty batch of its own, so
    that the consumer sees (and counts) a stream where every sample is bad. Skip
    markers ride on the next batch; the markers met after the last batch ride on that last batch
    (it is held back until the stream ends), or on an empty batch if no item was good.
    """
    pending: list[LMMItem] = []
    skips: list[Skipped] = []
    held: LMMBatch | None = None
    n_tok = n_media = 0
    limit_media = max_media_tokens if max_media_tokens is not None else float("inf")

    def flush() -> LMMBatch:
        batch = collator(pending)
        batch.skipped = list(skips)
        pending.clear()
        skips.clear()
        return batch

    for item in stream:
        if isinstance(item, Skipped):
            skips.append(item)
            if len(skips) >= MAX_PENDING_SKIPS and not pending:
                yield collate_items(skips)
                skips.clear()
            continue
        if len(item) > max_tokens or item.num_patches > limit_media:
            skips.append(
                Skipped(
                    item.key,
                    "too_long",
                    f"{len(item)} tokens / {item.num_patches} patches "
                    f"exceed max_tokens={max_tokens} / max_media_tokens={max_media_tokens}",
                    item.source,
                )
            )
            continue
        full = max_samples is not None and len(pending) >= max_samples
        if pending and (full or n_tok + len(item) > max_tokens or n_media + item.num_patches > limit_media):
            if held is not None:
                yield held
            held = flush()
            held.next_pos = item.stream_pos  # the next batch starts with this item
            n_tok = n_media = 0
        pending.append(item)
        n_tok += len(item)
        n_media += item.num_patches
    if pending:
        if held is not None:
            yield held
        held = flush()
    if held is None:
        if skips:
            yield collate_items(skips)
        return
    held.skipped += skips
    yield held
