"""Motion fields (bitstream + block matching), warping and residuals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.codec.decode import DecodeConfig, decode_clip
from encoder.codec.motion import (
    Geometry,
    estimate_motion,
    motion_vector_cell,
    rasterize_motion_vectors,
    residual_energy,
    resize_motion_field,
    rotate_vectors,
    warp,
)

_MV_DTYPE = np.dtype(
    [
        ("source", "<i4"), ("w", "u1"), ("h", "u1"), ("src_x", "<i2"), ("src_y", "<i2"), ("dst_x", "<i2"),
        ("dst_y", "<i2"), ("flags", "<u8"), ("motion_x", "<i4"), ("motion_y", "<i4"), ("motion_scale", "<u2"),
    ],
    align=True,
)  # fmt: skip


def _interior(box: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return slice(y0 + margin, y1 - margin), slice(x0 + margin, x1 - margin)


def _moving(clip, synth) -> list[int]:
    """Sampled positions whose frame has a reference, a visible object and a nonzero displacement."""
    return [
        k
        for k, i in enumerate(clip.frame_ids)
        if clip.motion_source[k] != "none" and synth.boxes[i, 0] >= 0 and np.any(synth.velocity[i])
    ]


@pytest.fixture(scope="module")
def h264_clip(mover_h264):
    # 22 samples of 64 frames: ids 0, 3, 6, ..., 63 (48 is a mid-clip I-frame)
    return decode_clip(mover_h264.path, DecodeConfig(num_frames=22, input_size=128, motion="auto"))


@pytest.fixture(scope="module")
def hevc_clip(mover_hevc):
    return decode_clip(mover_hevc.path, DecodeConfig(num_frames=22, input_size=128, motion="auto"))


def test_bitstream_field_points_against_object_motion(h264_clip, mover_h264):
    ks = [k for k in _moving(h264_clip, mover_h264) if h264_clip.motion_source[k] == "bitstream"]
    assert len(ks) >= 8
    for k in ks:
        i = h264_clip.frame_ids[k]
        inside = h264_clip.motion[k][_interior(mover_h264.boxes[i])].reshape(-1, 2)
        np.testing.assert_allclose(inside.mean(0), -mover_h264.velocity[i], atol=0.75)
        background = np.ones((128, 128), dtype=bool)
        x0, y0, x1, y1 = mover_h264.boxes[i]
        background[max(0, y0 - 16) : y1 + 16, max(0, x0 - 16) : x1 + 16] = False
        assert np.abs(h264_clip.motion[k][background]).mean() < 0.25


def test_estimated_hevc_agrees_with_bitstream_h264(h264_clip, hevc_clip, mover_h264):
    assert set(hevc_clip.motion_source[1:]) == {"estimated"}
    np.testing.assert_array_equal(h264_clip.frame_ids, hevc_clip.frame_ids)
    a, b = [], []
    for k in _moving(h264_clip, mover_h264):
        region = _interior(mover_h264.boxes[h264_clip.frame_ids[k]])
        a.append(h264_clip.motion[k][region].reshape(-1, 2))
        b.append(hevc_clip.motion[k][region].reshape(-1, 2))
    a, b = np.concatenate(a), np.concatenate(b)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-6)
    assert cos.mean() > 0.9


def test_bitstream_and_estimated_agree_on_the_same_clip(h264_clip, mover_h264):
    est = decode_clip(mover_h264.path, DecodeConfig(num_frames=22, input_size=128, motion="estimated"))
    ks = [k for k in _moving(h264_clip, mover_h264) if h264_clip.motion_source[k] == "bitstream"]
    a = np.concatenate([h264_clip.motion[k][_interior(mover_h264.boxes[h264_clip.frame_ids[k]])] for k in ks])
    b = np.concatenate([est.motion[k][_interior(mover_h264.boxes[est.frame_ids[k]])] for k in ks])
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-6)
    assert cos.mean() > 0.9
    np.testing.assert_array_equal(est.residual.shape, h264_clip.residual.shape)


def test_mid_clip_intra_frame_borrows_the_next_frames_vectors(h264_clip, mover_h264):
    ks = [k for k, i in enumerate(h264_clip.frame_ids) if i % 16 == 0 and i > 0]
    assert ks and all(h264_clip.pict_types[k] == "I" for k in ks)
    for k in ks:
        i = h264_clip.frame_ids[k]
        assert h264_clip.motion_source[k] == "bitstream_next"
        inside = h264_clip.motion[k][_interior(mover_h264.boxes[i])].reshape(-1, 2)
        np.testing.assert_allclose(np.median(inside, 0), -mover_h264.velocity[i], atol=0.5)


def _near_and_far(synth, i: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the object and its trail (boxes at i and i-1, +2 px) and of pixels ≥ 16 px away."""
    near, far = np.zeros(shape, dtype=bool), np.ones(shape, dtype=bool)
    for x0, y0, x1, y1 in synth.boxes[[i, i - 1]]:
        near[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
        far[max(0, y0 - 16) : y1 + 16, max(0, x0 - 16) : x1 + 16] = False
    return near, far


@pytest.mark.parametrize("which", ["h264_clip", "hevc_clip"])
def test_residual_higher_on_object_than_background(which, request, mover_h264):
    clip = request.getfixturevalue(which)
    for k in _moving(clip, mover_h264):
        near, far = _near_and_far(mover_h264, clip.frame_ids[k], clip.residual[k].shape)
        # the moving object and the background it uncovers are mispredicted; static texture is not
        assert clip.residual[k][near].mean() > 3 * clip.residual[k][far].mean() + 1.0


def test_b_frame_vectors_are_per_frame(mover_bframes):
    clip = decode_clip(mover_bframes.path, DecodeConfig(num_frames=22, input_size=128))
    assert "B" in clip.pict_types and "estimated" not in clip.motion_source[1:16]
    vel = mover_bframes.velocity
    steady = [  # constant object motion over the reference span (frames i-2 .. i+3): no bounce inside it
        k
        for k in _moving(clip, mover_bframes)
        if clip.motion_source[k] == "bitstream"
        and (vel[clip.frame_ids[k] - 2 : clip.frame_ids[k] + 4] == vel[clip.frame_ids[k]]).all()
    ]
    assert len(steady) >= 10
    for k in steady:  # P vectors span several frames and B vectors point both ways: all scaled to one frame
        i = clip.frame_ids[k]
        mean = clip.motion[k][_interior(mover_bframes.boxes[i])].reshape(-1, 2).mean(0)
        if clip.pict_types[k] == "P":
            np.testing.assert_allclose(mean, -vel[i], atol=0.75)
        else:  # x264 may bi-predict object blocks with a zero forward vector: check direction and scale
            assert mean @ -vel[i] / (np.linalg.norm(mean) * np.linalg.norm(vel[i]) + 1e-6) > 0.9
            assert np.linalg.norm(mean) < 1.25 * np.linalg.norm(vel[i])


def test_static_scene_has_no_motion(static_h264):
    clip = decode_clip(static_h264.path, DecodeConfig(num_frames=8, input_size=64))
    assert np.abs(clip.motion).max() < 0.5
    assert clip.residual[1:].mean() < 3.0


def test_rotated_clip_motion_follows_display(rotated_h264):
    clip = decode_clip(rotated_h264.path, DecodeConfig(num_frames=8, input_size=128, aspect="pad"))
    for k, i in enumerate(clip.frame_ids):
        if clip.motion_source[k] != "bitstream" or not np.any(rotated_h264.velocity[i]):
            continue
        x0, y0, x1, y1 = rotated_h264.boxes[i]  # original 128×96 (w×h); shown rotated 90° cw, 16 px pad left
        region = (slice(x0 + 4, x1 - 4), slice(96 - y1 + 4 + 16, 96 - y0 - 4 + 16))
        vx, vy = rotated_h264.velocity[i]
        np.testing.assert_allclose(clip.motion[k][region].reshape(-1, 2).mean(0), [vy, -vx], atol=0.75)


def test_estimate_motion_recovers_integer_shift():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 64, 72, generator=g) * 255
    shifts = [(3, -2), (-5, 7)]  # (dx, dy) of the content
    cur = torch.stack([torch.roll(ref[i], shifts=(dy, dx), dims=(0, 1)) for i, (dx, dy) in enumerate(shifts)])
    field = estimate_motion(cur, ref, block_size=8, search_range=7)
    assert field.shape == (2, 64, 72, 2) and field.dtype == torch.float32
    for i, (dx, dy) in enumerate(shifts):  # interior blocks (away from the roll seam) are exact
        inner = field[i, 8:-8, 8:-8].reshape(-1, 2)
        assert torch.all(inner == torch.tensor([-dx, -dy], dtype=torch.float32))
    flat = estimate_motion(torch.full((1, 32, 32), 7.0), torch.full((1, 32, 32), 7.0))
    assert not flat.any()  # ties resolve to the zero vector


@pytest.mark.parametrize("levels", [1, 2])
def test_estimate_motion_recovers_smooth_shift(levels):
    """A smooth texture (what the pyramid's average pooling keeps) shifted by odd and even amounts."""
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(1, 1, 24, 26, generator=g) * 255
    ref = torch.nn.functional.interpolate(noise, size=(96, 104), mode="bicubic", align_corners=False)[0, 0]
    for dx, dy in [(3, -2), (-5, 7), (6, 1)]:
        cur = torch.roll(ref, shifts=(dy, dx), dims=(0, 1))
        field = estimate_motion(cur, ref, block_size=8, search_range=7, levels=levels)
        inner = field[16:-16, 16:-16].reshape(-1, 2)
        assert (inner == torch.tensor([-dx, -dy], dtype=torch.float32)).all(-1).float().mean() >= 0.95


def test_pyramid_agrees_with_exhaustive_search(mover_h264):
    from encoder.codec.motion import rgb_to_luma

    clip = decode_clip(
        mover_h264.path, DecodeConfig(num_frames=64, input_size=112, motion="none")
    )  # consecutive
    y = rgb_to_luma(torch.from_numpy(clip.frames)).float()
    full = estimate_motion(y[1:], y[:-1], 8, 7, levels=1)
    coarse = estimate_motion(y[1:], y[:-1], 8, 7, levels=2)
    assert (full == coarse).all(-1).float().mean() >= 0.95


def test_estimate_motion_odd_sizes_and_2d_input():
    ref = torch.rand(37, 45, generator=torch.Generator().manual_seed(3)) * 255
    cur = torch.roll(ref, shifts=(0, 2), dims=(0, 1))
    field = estimate_motion(cur, ref, block_size=8, search_range=3)
    assert field.shape == (37, 45, 2)
    assert torch.all(field[8:32, 8:40] == torch.tensor([-2.0, 0.0]))


def test_warp_identity_and_shift():
    ref = torch.rand(2, 20, 30, generator=torch.Generator().manual_seed(4)) * 255
    np.testing.assert_allclose(warp(ref, torch.zeros(2, 20, 30, 2)).numpy(), ref.numpy(), atol=1e-2)
    field = torch.zeros(20, 30, 2)
    field[..., 0] = 2.0  # pred(x) = ref(x + 2): content shifted left by two
    pred = warp(ref[0], field)
    np.testing.assert_allclose(pred[:, :-2].numpy(), ref[0, :, 2:].numpy(), atol=1e-2)
    np.testing.assert_allclose(
        pred[:, -2:].numpy(), ref[0, :, -1:].expand(20, 2).numpy(), atol=1e-2
    )  # border
    half = torch.full((20, 30, 2), 0.5)
    expected = (ref[0, :-1, :-1] + ref[0, 1:, :-1] + ref[0, :-1, 1:] + ref[0, 1:, 1:]) / 4
    np.testing.assert_allclose(warp(ref[0], half)[:-1, :-1].numpy(), expected.numpy(), atol=1e-2)
    res = residual_energy(torch.roll(ref, 3, dims=2), ref, torch.full((2, 20, 30, 2), 0.0))
    assert res.shape == (2, 20, 30) and res.min() >= 0


def test_rasterize_motion_vectors():
    mvs = np.zeros(3, dtype=_MV_DTYPE)
    # forward 16x16 block at (0,0) with quarter-pel vector (-1.25, 0.5)
    mvs[0] = (-1, 16, 16, 0, 0, 8, 8, 0, -5, 2, 4)
    # backward-only 8x8 block at (16, 8): negated
    mvs[1] = (1, 8, 8, 0, 0, 20, 12, 0, 8, 0, 4)
    # the same 16x16 block also has a backward vector: the forward one must win
    mvs[2] = (1, 16, 16, 0, 0, 8, 8, 0, 40, 40, 4)
    field = rasterize_motion_vectors(mvs, 24, 32)
    assert field.shape == (24, 32, 2) and field.dtype == np.float32
    np.testing.assert_array_equal(field[:16, :16].reshape(-1, 2), np.tile([-1.25, 0.5], (256, 1)))
    np.testing.assert_array_equal(field[8:16, 16:24].reshape(-1, 2), np.tile([-2.0, 0.0], (64, 1)))
    assert not field[16:, :].any() and not field[:8, 16:].any() and not field[:, 24:].any()
    scaled = rasterize_motion_vectors(mvs, 24, 32, distances=(5, 2))  # per-frame: forward /5, backward /2
    np.testing.assert_allclose(scaled[0, 0], [-0.25, 0.1])
    np.testing.assert_allclose(scaled[8, 16], [-1.0, 0.0])
    coarse = rasterize_motion_vectors(mvs, 24, 32, cell=8)
    assert coarse.shape == (3, 4, 2)
    np.testing.assert_array_equal(coarse, field[::8, ::8])


def test_motion_vector_cell_is_the_alignment_grid():
    """The largest power of two (<= 16) dividing every block size and corner, as gcd(..., 16) gives it;
    and one-cell blocks (every block exactly a cell) paint like the general path."""
    import math

    rng = np.random.default_rng(0)
    for _ in range(50):
        mvs = np.zeros(int(rng.integers(1, 40)), dtype=_MV_DTYPE)
        mvs["w"] = rng.choice([4, 8, 16], len(mvs))
        mvs["h"] = rng.choice([4, 8, 16], len(mvs))
        mvs["dst_x"] = rng.integers(-2, 20, len(mvs)) * rng.choice([2, 4, 8, 16]) + mvs["w"] // 2
        mvs["dst_y"] = rng.integers(0, 20, len(mvs)) * rng.choice([4, 8, 16]) + mvs["h"] // 2
        x0, y0 = mvs["dst_x"].astype(int) - mvs["w"] // 2, mvs["dst_y"].astype(int) - mvs["h"] // 2
        vals = [abs(int(v)) for v in (*mvs["w"], *mvs["h"], *x0, *y0)] + [16]
        assert motion_vector_cell(mvs) == math.gcd(*vals)
    assert motion_vector_cell(np.zeros(0, dtype=_MV_DTYPE)) == 16
    blocks = np.zeros(2, dtype=_MV_DTYPE)
    blocks[0] = (-1, 8, 8, 0, 0, 4, 4, 0, 4, 0, 4)
    blocks[1] = (-1, 8, 8, 0, 0, 36, 12, 0, 0, -8, 4)  # partly outside a 16-row frame
    one = rasterize_motion_vectors(blocks, 16, 40, cell=8)
    fine = rasterize_motion_vectors(blocks, 16, 40, cell=1)
    np.testing.assert_array_equal(one, fine[::8, ::8])
    assert one[0, 0].tolist() == [1.0, 0.0] and one[1, 4].tolist() == [0.0, -2.0]


def test_resize_motion_field_scales_and_rotates():
    field = np.zeros((64, 128, 2), dtype=np.float32)
    field[..., 0], field[..., 1] = -4.0, 2.0
    half = resize_motion_field(field, Geometry.make(64, 128, 64, "resize"))
    assert half.shape == (64, 64, 2)
    np.testing.assert_allclose(half[0, 0], [-2.0, 2.0])  # x halved, y unchanged
    padded = resize_motion_field(field, Geometry.make(64, 128, 64, "pad"))
    assert not padded[:16].any() and not padded[48:].any()
    np.testing.assert_allclose(padded[32, 32], [-2.0, 1.0])
    rotated = resize_motion_field(field, Geometry.make(64, 128, 64, "pad", rotation_cw=90))
    np.testing.assert_allclose(rotated[32, 32], [-1.0, -2.0])  # cw turn: (dx, dy) -> (-dy, dx)
    assert not rotated[:, :16].any()
    f = np.random.default_rng(0).normal(size=(5, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(rotate_vectors(rotate_vectors(f, 1), 3), f)


@pytest.mark.parametrize(
    ("aspect", "scaled", "offset"),
    [("resize", (64, 64), (0, 0)), ("crop", (64, 128), (0, -32)), ("pad", (32, 64), (16, 0))],
)
def test_geometry(aspect, scaled, offset):
    g = Geometry.make(64, 128, 64, aspect)
    assert (g.scaled_h, g.scaled_w) == scaled and (g.top, g.left) == offset
    img = np.arange(scaled[0] * scaled[1], dtype=np.int32).reshape(scaled)
    assert g.place(img).shape == (64, 64)
