"""LMM batches: media packing consistent with the text media spans; greedy packing limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.codec import PatchSelection
from llava_ov.data.dataset import LMMCollator, LMMItem, collate_items, make_item, make_prompt_item, pack_items
from llava_ov.data.samples import MediaSample
from llava_ov.data.stats import DataStats, Skipped
from llava_ov.text.tokenizer import IMAGE_PAD, VIDEO_PAD


def _sel(k: int, seed: int, frames: int = 4) -> PatchSelection:
    rng = np.random.default_rng(seed)
    pos = np.stack([rng.integers(0, 64, k), rng.integers(0, 4, k), rng.integers(0, 4, k)], 1)
    return PatchSelection(
        pos,
        rng.integers(0, 255, (k, 3, 14, 14), dtype=np.uint8),
        np.ones(k),
        np.arange(frames),
        np.linspace(0, 63, frames).astype(int),
        14,
        (4, 4),
        {"mode": "codec"},
    )


def _sample(key: str, sizes: list[int], seed: int = 0, text: str = "What happens?") -> MediaSample:
    media = [_sel(k, seed + i) for i, k in enumerate(sizes)]
    kinds = ["video"] * len(sizes)
    record = {
        "conversations": [
            {"from": "human", "value": "<video>\n" * len(sizes) + text},
            {"from": "gpt", "value": "It moves."},
        ],
        "qtype": "direction",
        "answer": "left",
    }
    return MediaSample(key, record, media, kinds, "src")


def merge4(sel: PatchSelection) -> int:
    return -(-len(sel) // 4)


def test_media_packing_matches_spans(tokenizer):
    items = [
        make_item(_sample("a", [8, 12], 0), tokenizer, merge4),
        make_item(_sample("b", [5], 7), tokenizer, merge4),
    ]
    batch = collate_items(items)
    media, text = batch.media, batch.text
    assert media.pixels.dtype == torch.uint8 and media.pixels.shape == (25, 3, 14, 14)
    assert media.positions.dtype == torch.int32 and media.positions.shape == (25, 3)
    assert media.cu_seqlens.tolist() == [0, 8, 20, 25] and media.cu_seqlens.dtype == torch.int32
    assert media.num_tokens.tolist() == [2, 3, 2] == [b - a for a, b, _ in text.media_spans]
    pad = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    for a, b, kind in text.media_spans:
        assert kind == "video" and (text.input_ids[0, a:b] == pad).all()
    assert int((text.input_ids == pad).sum()) == int(media.num_tokens.sum())
    sels = [s for it in items for s in it.media]
    for i, s in enumerate(sels):
        lo, hi = media.cu_seqlens[i], media.cu_seqlens[i + 1]
        np.testing.assert_array_equal(media.positions[lo:hi].numpy(), s.positions)
        np.testing.assert_array_equal(media.pixels[lo:hi].numpy(), s.pixels)
    assert batch.keys == ["a", "b"] and batch.meta[0] == {"qtype": "direction", "answer": "left"}
    assert media.grid_hw.tolist() == [[4, 4]] * 3 and media.kinds == ["video"] * 3


def test_padded_layout_and_skips(tokenizer):
    items = [
        make_item(_sample("a", [4]), tokenizer),
        Skipped("x", "bad_json"),
        make_item(_sample("b", []), tokenizer),
    ]
    batch = LMMCollator(padded=True, pad_token_id=tokenizer.pad_token_id)(items)
    assert batch.text.input_ids.shape[0] == 2 and batch.media.cu_seqlens.tolist() == [0, 4]
    assert [s.key for s in batch.skipped] == ["x"]
    stats = DataStats()
    stats.update(batch)
    assert stats.used == 2 and stats.skipped == {"bad_json": 1}


def test_prompt_item_for_eval(tokenizer):
    item = make_prompt_item(_sample("a", [4]), tokenizer)
    assert item.meta["answer"] == "left" and int((item.tokens.labels != -100).sum()) == 0
    assert tokenizer.decode(item.tokens.input_ids).endswith("<|im_start|>assistant\n")
    assert "It moves." not in tokenizer.decode(item.tokens.input_ids)
    ids = item.tokens.input_ids.tolist()
    assert ids.count(tokenizer.convert_tokens_to_ids(VIDEO_PAD)) == 4
    assert tokenizer.convert_tokens_to_ids(IMAGE_PAD) not in ids


@pytest.mark.parametrize("max_media", [None, 30])
def test_pack_items_respects_limits(tokenizer, max_media):
    rng = np.random.default_rng(0)
    stream: list[LMMItem | Skipped] = []
    for i in range(40):
        sizes = [int(rng.integers(4, 16))] if i % 3 else []
        stream.append(
            make_item(_sample(f"s{i}", sizes, i, text="word " * int(rng.integers(0, 30))), tokenizer)
        )
        if i % 9 == 0:
            stream.append(Skipped(f"bad{i}", "corrupt_media"))
    max_tokens = max(len(it) for it in stream if isinstance(it, LMMItem)) + 40
    big = make_item(_sample("huge", [4], text="word " * 300), tokenizer)
    assert len(big) > max_tokens
    stream.insert(5, big)
    batches = list(pack_items(stream, max_tokens, max_media))
    keys = [k for b in batches for k in b.keys]
    assert keys == [it.key for it in stream if isinstance(it, LMMItem) and it.key != "huge"]  # order kept
    for b in batches:
        assert b.text.input_ids.shape[1] <= max_tokens and b.text.cu_seqlens[-1] == b.text.input_ids.shape[1]
        if max_media:
            assert b.media.num_patches <= max_media
    lens = [b.text.input_ids.shape[1] for b in batches]
    assert sum(lens[:-1]) / len(lens[:-1]) > max_tokens * 0.6  # greedy packing fills the bins
    skipped = [s for b in batches for s in b.skipped]
    assert sorted(s.key for s in skipped) == sorted(["huge"] + [f"bad{i}" for i in range(0, 40, 9)])
    assert next(s for s in skipped if s.key == "huge").reason == "too_long"


def test_pack_items_all_skipped_yields_stats_only_batch():
    batches = list(pack_items([Skipped("a", "bad_json"), Skipped("b", "too_long")], 100))
    assert len(batches) == 1 and batches[0].is_empty and len(batches[0].skipped) == 2
