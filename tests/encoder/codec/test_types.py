"""PatchSelection: validation, npz/bytes round trips, virtual grid."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.codec.types import PatchSelection, virtual_t


def _sel(k=5, p=14):
    rng = np.random.default_rng(0)
    pos = np.stack([np.sort(rng.integers(0, 64, k)), rng.integers(0, 16, k), rng.integers(0, 16, k)], 1)
    return PatchSelection(
        positions=pos,
        pixels=rng.integers(0, 256, (k, 3, p, p), dtype=np.uint8),
        scores=rng.random(k),
        frame_ids=np.arange(8) * 3,
        frame_t=virtual_t(8),
        patch_size=p,
        grid_hw=(16, 16),
        meta={"path": "x.mp4", "mode": "codec", "fps": np.float32(25.0)},
    )


def test_virtual_grid_matches_notes():
    assert virtual_t(8).tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
    assert virtual_t(64).tolist() == list(range(64))
    assert virtual_t(1).tolist() == [0]


def test_roundtrip_file_and_bytes(tmp_path):
    sel = _sel()
    for back in (
        PatchSelection.load(sel.save(tmp_path / "a" / "s.npz")),
        PatchSelection.from_bytes(sel.to_bytes()),
    ):
        np.testing.assert_array_equal(back.positions, sel.positions)
        np.testing.assert_array_equal(back.pixels, sel.pixels)
        np.testing.assert_array_equal(back.scores, sel.scores)
        np.testing.assert_array_equal(back.frame_ids, sel.frame_ids)
        assert back.positions.dtype == np.int32 and back.grid_hw == (16, 16) and back.patch_size == 14
        assert back.meta == {"path": "x.mp4", "mode": "codec", "fps": 25.0}
    assert sel.dense_tokens == 8 * 256


@pytest.mark.parametrize(
    "change,match",
    [
        ({"positions": np.zeros((5, 2))}, r"positions must be \[K, 3\]"),
        ({"pixels": np.zeros((4, 3, 14, 14))}, "pixels must be"),
        ({"scores": np.zeros(3)}, "scores must be"),
        ({"positions": np.full((5, 3), 64)}, "t must be < 64"),
        ({"positions": np.full((5, 3), -1)}, "non-negative"),
    ],
)
def test_validation(change, match):
    sel = _sel()
    kwargs = {
        k: getattr(sel, k)
        for k in ("positions", "pixels", "scores", "frame_ids", "frame_t", "patch_size", "grid_hw")
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        PatchSelection(**kwargs)


def test_foreign_npz_is_rejected(tmp_path):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        PatchSelection.load(tmp_path / "x.npz")
