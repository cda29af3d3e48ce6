"""Saliency maps and patch scores on small synthetic fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.codec.saliency import (
    SaliencyConfig,
    compensate_camera,
    fit_similarity,
    fuse,
    motion_energy,
    normalize_per_frame,
    patch_scores,
    saliency_map,
)

S = 48
MOVER = (slice(8, 16), slice(30, 40))  # rows, cols of an independent mover
MOVER_VEC = (5.0, -3.0)


def _mover_mask() -> np.ndarray:
    mask = np.zeros((S, S), dtype=bool)
    mask[MOVER] = True
    return mask


def _pan_field(t: int = 3) -> np.ndarray:
    m = np.zeros((t, S, S, 2), np.float32)
    m[..., 0], m[..., 1] = 2.5, -1.0
    m[:, MOVER[0], MOVER[1]] = MOVER_VEC
    return m


def _zoom_rotate_field(t: int = 3, zoom: float = 1.06, deg: float = 4.0) -> np.ndarray:
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float64)
    x, y = xs - 20.0, ys - 27.0  # off-centre fixed point
    a, b = zoom * np.cos(np.deg2rad(deg)) - 1.0, zoom * np.sin(np.deg2rad(deg))
    field = np.stack([a * x - b * y + 1.5, b * x + a * y - 0.5], axis=-1).astype(np.float32)
    m = np.repeat(field[None], t, axis=0)
    m[:, MOVER[0], MOVER[1]] = MOVER_VEC
    return m


# ---- normalisation ----------------------------------------------------------------------------------
def test_normalize_maps_percentile_to_one_and_clips():
    x = np.stack([np.linspace(0, 10, S * S), np.linspace(0, 2, S * S)]).reshape(2, S, S).astype(np.float32)
    out = normalize_per_frame(x, 95.0)
    for t in range(2):
        p95 = np.percentile(x[t], 95)
        np.testing.assert_allclose(out[t], np.clip(x[t] / p95, 0, 1), atol=1e-6)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert (out >= 1.0).mean() == pytest.approx(0.05, abs=0.01)


def test_normalize_zero_percentile_uses_max_and_empty_frame_stays_zero():
    x = np.zeros((2, S, S), np.float32)
    x[0, 0, :4] = [1.0, 2.0, 4.0, 8.0]  # < 5 % active: p95 == 0
    out = normalize_per_frame(x, 95.0)
    np.testing.assert_allclose(out[0, 0, :4], [0.125, 0.25, 0.5, 1.0])
    assert np.isfinite(out).all() and (out[1] == 0).all()


def test_normalize_keeps_torch_type_and_rejects_bad_percentile():
    x = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(5))
    out = normalize_per_frame(x, 50.0)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    with pytest.raises(ValueError, match="percentile"):
        normalize_per_frame(x, 0.0)


# ---- camera compensation ----------------------------------------------------------------------------
def test_median_removes_pan_keeps_mover():
    out = compensate_camera(_pan_field(), "median")
    mover = _mover_mask()
    assert np.abs(out[:, ~mover]).max() < 1e-6
    np.testing.assert_allclose(out[:, mover], np.broadcast_to([2.5, -2.0], out[:, mover].shape), atol=1e-6)


def test_none_keeps_field_and_torch_roundtrip():
    m = _pan_field()
    np.testing.assert_array_equal(compensate_camera(m, "none"), m)
    out = compensate_camera(torch.from_numpy(m), "median")
    assert isinstance(out, torch.Tensor) and out.shape == m.shape


def test_similarity_removes_zoom_rotation_that_median_cannot():
    m = _zoom_rotate_field()
    mover = _mover_mask()
    sim = motion_energy(m, "similarity")
    med = motion_energy(m, "median")
    assert sim[:, ~mover].max() < 1e-3
    assert sim[:, mover].min() > 2.0
    assert med[:, ~mover].max() > 1.0  # the median cannot explain a zoom/rotation
    a, b = fit_similarity(m)[0, :2]
    assert a == pytest.approx(1.06 * np.cos(np.deg2rad(4)) - 1, abs=1e-4)
    assert b == pytest.approx(1.06 * np.sin(np.deg2rad(4)), abs=1e-4)


def test_similarity_handles_zero_and_pure_translation_frames():
    m = np.zeros((2, S, S, 2), np.float32)
    m[1, ..., 0] = 3.0
    out = compensate_camera(m, "similarity")
    assert np.abs(out).max() < 1e-5


def test_bad_camera_mode_lists_choices():
    with pytest.raises(ValueError, match="median.*similarity.*none"):
        compensate_camera(_pan_field(), "affine")
    with pytest.raises(ValueError, match=r"\[T, H, W, 2\]"):
        compensate_camera(np.zeros((2, 4, 4)), "median")


# ---- fusion -----------------------------------------------------------------------------------------
MV = np.array([[[0.0, 0.5], [1.0, 0.25]]], np.float32)
RES = np.array([[[1.0, 0.5], [0.0, 1.0]]], np.float32)


@pytest.mark.parametrize(
    "fusion, wm, wr, expected",
    [
        ("mean", 1.0, 1.0, [[0.5, 0.5], [0.5, 0.625]]),
        ("mean", 3.0, 1.0, [[0.25, 0.5], [0.75, 0.4375]]),
        ("max", 1.0, 1.0, [[1.0, 0.5], [1.0, 1.0]]),
        ("max", 1.0, 0.5, [[0.5, 0.5], [1.0, 0.5]]),
        ("geomean", 1.0, 1.0, [[0.0, 0.5], [0.0, 0.5]]),
        ("geomean", 1.0, 0.0, [[0.0, 0.5], [1.0, 0.25]]),
    ],
)
def test_fusion_values(fusion, wm, wr, expected):
    cfg = SaliencyConfig(fusion=fusion, w_motion=wm, w_residual=wr)
    np.testing.assert_allclose(fuse(MV, RES, cfg)[0], expected, atol=1e-6)


def test_fusion_rejects_bad_config():
    with pytest.raises(ValueError, match="mean.*max.*geomean"):
        fuse(MV, RES, SaliencyConfig(fusion="sum"))
    with pytest.raises(ValueError, match="weights"):
        fuse(MV, RES, SaliencyConfig(w_motion=0.0, w_residual=0.0))
    with pytest.raises(ValueError, match="shape"):
        fuse(MV, RES[:, :1], SaliencyConfig())


# ---- full map and patch scores ----------------------------------------------------------------------
def test_saliency_map_range_and_mover_is_salient():
    m = _pan_field(4)
    m[0] = 0.0  # frame 0: no motion
    res = np.zeros((4, S, S), np.float32)
    res[:, MOVER[0], MOVER[1]] = 20.0
    sal = saliency_map(m, res, SaliencyConfig())
    assert sal.dtype == np.float32 and sal.shape == (4, S, S)
    assert sal.min() >= 0.0 and sal.max() <= 1.0
    mover = _mover_mask()
    assert (sal[1:, mover] == 1.0).all() and sal[:, ~mover].max() < 1e-6  # the fit leaves rounding residue
    assert (sal[0, mover] == 0.5).all()  # residual only
    with pytest.raises(ValueError, match="residual"):
        saliency_map(m, res[:, :-1])


@pytest.mark.parametrize("p", [14, 16])
def test_patch_scores_sum(p):
    rng = np.random.default_rng(0)
    sal = rng.random((3, 112, 224), dtype=np.float32)  # 112 and 224 divide by 14 and 16
    t, h, w = sal.shape
    expected = np.array(
        [
            [
                [sal[k, i * p : (i + 1) * p, j * p : (j + 1) * p].sum() for j in range(w // p)]
                for i in range(h // p)
            ]
            for k in range(t)
        ]
    )
    out = patch_scores(sal, p)
    assert out.dtype == np.float32 and out.shape == (t, h // p, w // p)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(out, sal.reshape(t, h // p, p, w // p, p).sum(axis=(2, 4)), rtol=1e-5)


def test_patch_scores_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="not divisible by patch_size 14"):
        patch_scores(np.zeros((1, 32, 28), np.float32), 14)
    with pytest.raises(ValueError, match="positive integer"):
        patch_scores(np.zeros((1, 28, 28), np.float32), 0)
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        patch_scores(np.zeros((28, 28), np.float32), 14)
