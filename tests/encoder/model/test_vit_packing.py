"""Packing builders, packing invariance, codec selections, pixel normalisation and bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from model_support import random_model

from encoder.model import (
    CLIP_MEAN,
    CLIP_STD,
    OVEncoder,
    pack_images,
    pack_selections,
    pack_videos,
    video_time_grid,
)

P = 14


@dataclass
class FakeSelection:  # stand-in for encoder.codec.types.PatchSelection (duck typing)
    pixels: torch.Tensor  # uint8 [K, 3, p, p]
    positions: torch.Tensor  # int32 [K, 3]
    patch_size: int = P


def _model(**kw) -> OVEncoder:
    return random_model(**kw).eval()


def _selection(k: int, seed: int) -> FakeSelection:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (k, 3, P, P), dtype=torch.uint8, generator=g)
    pos = torch.stack(
        [
            torch.randint(0, 64, (k,), generator=g),
            torch.randint(0, 16, (k,), generator=g),
            torch.randint(0, 16, (k,), generator=g),
        ],
        1,
    ).to(torch.int32)
    return FakeSelection(pixels, pos)


def test_video_time_grid():
    assert video_time_grid(8).tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
    assert video_time_grid(1).tolist() == [0]
    assert video_time_grid(64).tolist() == list(range(64))


def test_pack_images_and_videos_layout():
    packed = pack_images([torch.zeros(3, 2 * P, 3 * P), torch.zeros(3, P, P)], P)
    assert packed.cu_seqlens.tolist() == [0, 6, 7]
    assert packed.cu_seqlens.dtype == torch.int32 and packed.positions.dtype == torch.int32
    assert packed.positions[:6].tolist() == [[0, h, w] for h in range(2) for w in range(3)]
    vid = pack_videos(torch.zeros(2, 3, 3, P, 2 * P), P)
    assert vid.cu_seqlens.tolist() == [0, 6, 12]
    assert vid.positions[:6, 0].tolist() == [0, 0, 31, 31, 63, 63]
    # patch i of frame 0 holds the right pixels
    img = torch.arange(3 * 2 * P * 3 * P).view(3, 2 * P, 3 * P)
    patches = pack_images([img], P).pixels
    torch.testing.assert_close(patches[4], img[:, P : 2 * P, P : 2 * P])


def test_packing_invariance():
    model = _model()
    sels = [_selection(5, 0), _selection(9, 1), _selection(2, 2)]
    with torch.no_grad():
        packed = model.forward_selections(sels, output_layer=-2)
        singles = [model.forward_selections([s], output_layer=-2) for s in sels]
    for name in ("last_hidden_state", "hidden_states"):
        torch.testing.assert_close(
            getattr(packed, name), torch.cat([getattr(o, name) for o in singles]), atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(packed.pooled, torch.cat([o.pooled for o in singles]), atol=1e-5, rtol=1e-5)
    assert [t.shape[0] for t in packed.split(packed.last_hidden_state)] == [5, 9, 2]


def test_selections_equal_manual_pack_and_uint8_normalisation():
    model = _model()
    sel = _selection(6, 3)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    normalised = (sel.pixels.float() / 255 - mean) / std
    cu = torch.tensor([0, 6], dtype=torch.int32)
    with torch.no_grad():
        a = model.forward_selections([sel])
        b = model(normalised, sel.positions, cu)
        c = model(normalised.flatten(1), sel.positions, cu)  # flattened patches
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state)
    torch.testing.assert_close(b.last_hidden_state, c.last_hidden_state)
    other = _model(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    with torch.no_grad():
        d = other(((sel.pixels.float() / 255 - 0.5) / 0.5), sel.positions, cu)
        e = other.forward_selections([sel])
    torch.testing.assert_close(d.last_hidden_state, e.last_hidden_state)


def test_selection_errors():
    sel = _selection(4, 0)
    with pytest.raises(ValueError, match="patch_size 16"):
        pack_selections([FakeSelection(sel.pixels, sel.positions, 16)], patch_size=P)
    with pytest.raises(ValueError, match="4 patches but 3 positions"):
        pack_selections([FakeSelection(sel.pixels, sel.positions[:3])])
    with pytest.raises(ValueError, match="no attribute 'pixels'"):
        pack_selections([object()])
    with pytest.raises(ValueError, match="empty list"):
        pack_selections([])


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, p, c: (x[:-1], p, c), "positions have"),
        (lambda x, p, c: (x, p[:, :2], c), r"positions must be \[N, 3\]"),
        (lambda x, p, c: (x, p.float(), c), "integers"),
        (lambda x, p, c: (x[:, :, :7], p, c), r"pixels must be \[N, 3, 14, 14\]"),
        (lambda x, p, c: (x, p, torch.tensor([1, 4, 10], dtype=torch.int32)), "start at 0"),
        (lambda x, p, c: (x, p, torch.tensor([0, 6, 4, 10], dtype=torch.int32)), "non-decreasing"),
        (lambda x, p, c: (x, p, torch.tensor([0, 4, 9], dtype=torch.int32)), "end at the number of patches"),
        (lambda x, p, c: (x, p, torch.tensor([0, 4, 4, 10], dtype=torch.int32)), "empty sequence"),
        (lambda x, p, c: (x, p, torch.tensor([0], dtype=torch.int32)), "B \\+ 1 >= 2"),
        (
            lambda x, p, c: (x, p + torch.tensor([64, 0, 0], dtype=torch.int32), c),
            r"t positions must lie in \[0, 64\)",
        ),
        (lambda x, p, c: (x, p - torch.tensor([0, 0, 1], dtype=torch.int32), c), "non-negative"),
    ],
)
def test_bad_input_raises(mutate, match):
    model = _model()
    sels = [_selection(4, 0), _selection(6, 1)]
    packed = pack_selections(sels)
    pos = packed.positions.clone()
    pos[:, 2] = pos[:, 2].clamp(min=0)
    pos[0, 2] = 0  # so that "- 1" makes a negative w
    pixels, positions, cu = mutate(packed.pixels, pos, packed.cu_seqlens)
    with pytest.raises(ValueError, match=match):
        model(pixels, positions, cu)


def test_bad_image_sizes_and_output_layer():
    model = _model()
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model.forward_images(torch.zeros(1, 3, 20, 28))
    with pytest.raises(ValueError, match="output_layer"):
        model.forward_images(torch.zeros(1, 3, 14, 14), output_layer=7)
