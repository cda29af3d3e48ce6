"""Helpers for the LMM model tests (imported by test_model*.py; holds no tests itself)."""

from __future__ import annotations

import numpy as np
import torch

from encoder.codec import PatchSelection, virtual_t
from llava_ov.data.dataset import LMMBatch, LMMItem, collate_items, make_item
from llava_ov.data.samples import MediaSample
from llava_ov.model import build_model, debug_config


def dense_sel(frames: int, gh: int, gw: int, seed: int = 0, patch: int = 14) -> PatchSelection:
    """Every patch of ``frames`` frames of a gh × gw grid (an image when frames == 1)."""
    rng = np.random.default_rng(seed)
    t = virtual_t(frames)
    tt, hh, ww = np.meshgrid(t, np.arange(gh), np.arange(gw), indexing="ij")
    pos = np.stack([tt.ravel(), hh.ravel(), ww.ravel()], 1)
    pixels = rng.integers(0, 256, (len(pos), 3, patch, patch), dtype=np.uint8)
    mode = "image" if frames == 1 else "frames"
    return PatchSelection(
        pos, pixels, np.ones(len(pos)), np.arange(frames), t, patch, (gh, gw), {"mode": mode}
    )


def sparse_sel(k: int = 7, seed: int = 0, patch: int = 14) -> PatchSelection:
    """A codec-like selection: ``k`` scattered patches of a 4-frame 4 × 4 clip."""
    full = dense_sel(4, 4, 4, seed, patch)
    keep = np.sort(np.random.default_rng(seed).choice(len(full), k, replace=False))
    return PatchSelection(
        full.positions[keep],
        full.pixels[keep],
        np.ones(k),
        full.frame_ids,
        full.frame_t,
        patch,
        (4, 4),
        {"mode": "codec"},
    )


def sample(
    key: str,
    media: list[PatchSelection],
    kinds: list[str],
    question: str = "What happens?",
    answer: str = "A red cat runs.",
) -> MediaSample:
    value = "".join(f"<{k}>\n" for k in kinds) + question
    record = {"conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]}
    return MediaSample(key, record, media, kinds, "test")


def mixed_items(tokenizer, tokens_for) -> list[LMMItem]:
    """Sample 0: a video (2 frames of 2 × 2) and an image (2 × 4); sample 1: text only."""
    s0 = sample("a", [dense_sel(2, 2, 2, 1), dense_sel(1, 2, 4, 2)], ["video", "image"])
    s1 = sample("b", [], [], "How many apples?", "There are 3 apples.")
    items = [make_item(s, tokenizer, tokens_for) for s in (s0, s1)]
    assert all(isinstance(it, LMMItem) for it in items), items
    return items


def batch_of(items: list[LMMItem], tokenizer, padded: bool = False) -> LMMBatch:
    return collate_items(items, padded=padded, pad_token_id=tokenizer.pad_token_id)


def tiny_model(tokenizer, merge: int = 1, seed: int = 0, **cfg_changes):
    torch.manual_seed(seed)
    cfg = debug_config(merge=merge)
    for k, v in cfg_changes.items():
        setattr(cfg, k, v)
    return build_model(cfg, tokenizer)
