"""End-to-end codec patchification on generated videos: the selection covers what moves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from encoder.codec import (
    CodecConfig,
    DecodeConfig,
    PatchSelection,
    SaliencyConfig,
    SelectConfig,
    patchify,
    patchify_with_canvas,
    video_settings,
)
from encoder.codec.synthetic import make_clip, object_patch_overlap

SIZE, P = 224, 14
G = SIZE // P


def selected_mask(sel: PatchSelection) -> np.ndarray:
    """bool [T, G, G] indexed by sampled frame (positions t mapped back through frame_t)."""
    t_to_i = {int(t): i for i, t in enumerate(sel.frame_t)}
    mask = np.zeros((sel.num_frames, *sel.grid_hw), dtype=bool)
    idx = np.array([t_to_i[int(t)] for t in sel.positions[:, 0]])
    mask[idx, sel.positions[:, 1], sel.positions[:, 2]] = True
    return mask


def coverage(sel: PatchSelection, clip) -> tuple[float, float]:
    """(recall of object patches, fraction of background patches selected) over frames 1..T-1."""
    cur = object_patch_overlap(clip, sel.frame_ids, SIZE, P)
    near = cur + object_patch_overlap(clip, np.maximum(sel.frame_ids - 1, 0), SIZE, P)
    mask = selected_mask(sel)[1:]
    obj = cur[1:] >= 0.5
    background = near[1:] == 0
    return mask[obj].mean(), mask[background].mean()


def _cfg(budget, **select) -> CodecConfig:
    return CodecConfig(
        decode=DecodeConfig(num_frames=64, input_size=SIZE), select=SelectConfig(budget=budget, **select)
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    out = {}
    for name, scene, codec in [
        ("mover_h264", "mover", "h264"),
        ("mover_hevc", "mover", "hevc"),
        ("pan_h264", "pan_mover", "h264"),
        ("static_h264", "static", "h264"),
        ("blink_h264", "blink", "h264"),
    ]:
        out[name] = make_clip(
            root / f"{name}.mp4", scene, codec=codec, width=SIZE, height=SIZE, num_frames=64, seed=1
        )
    return out


def _object_budget(clip) -> int:
    """Dense context frame + the object's patch count + a 10% margin."""
    cur = object_patch_overlap(clip, np.arange(1, 64), SIZE, P)
    return G * G + int(1.1 * (cur > 0).sum())


@pytest.mark.parametrize("name,motion", [("mover_h264", "bitstream"), ("mover_hevc", "estimated")])
def test_mover_is_selected(clips, name, motion):
    clip = clips[name]
    sel = patchify(clip.path, _cfg(_object_budget(clip)))
    assert set(sel.meta["motion_source"][1:]) <= {motion, "bitstream_next", "estimated"}
    assert sel.meta["motion_source"].count(motion) >= 48
    recall, bg = coverage(sel, clip)
    assert recall >= 0.9, f"only {recall:.0%} of the object's patches selected"
    assert bg <= 0.05, f"{bg:.1%} of background patches selected"
    # frame 0 is the dense context frame
    assert (sel.positions[:, 0] == 0).sum() == G * G


def test_camera_pan_mover_wins_after_compensation(clips):
    clip = clips["pan_h264"]
    budget = _object_budget(clip)
    recall, bg = coverage(patchify(clip.path, _cfg(budget)), clip)
    assert recall >= 0.8 and bg <= 0.1, (recall, bg)
    raw = _cfg(budget)
    raw.saliency = SaliencyConfig(camera="none", w_residual=0.0)  # raw motion magnitude: the pan dominates
    raw_recall, _ = coverage(patchify(clip.path, raw), clip)
    assert recall > raw_recall, "camera compensation should help the independent mover"


@pytest.mark.parametrize("codec, min_recall, max_bg", [("h264", 0.95, 0.015), ("hevc", 0.83, 0.025)])
def test_handheld_camera_rotation_and_zoom(tmp_path, codec, min_recall, max_bg):
    """Handheld shake (translation, rotation up to 4°, zoom up to 6%, changing every frame) over a textured
    scene: the default camera model leaves the background alone and finds the mover; a median (pan-only)
    model spends more of the budget on the background and misses more of the mover."""
    results = {}
    for seed in (1, 2):
        clip = make_clip(
            tmp_path / f"hand{seed}.mp4",
            "handheld",
            codec=codec,
            width=SIZE,
            height=SIZE,
            num_frames=64,
            seed=seed,
        )
        for camera in ("default", "median"):
            cfg = _cfg(_object_budget(clip))
            if camera == "median":
                cfg.saliency = SaliencyConfig(camera="median")
            results[camera, seed] = coverage(patchify(clip.path, cfg), clip)
    for seed in (1, 2):
        recall, bg = results["default", seed]
        assert recall >= min_recall and bg <= max_bg, (seed, recall, bg)
        assert results["median", seed][0] < recall and results["median", seed][1] > bg


def test_static_clip_falls_back(clips):
    sel = patchify(clips["static_h264"].path, _cfg(0.125))
    assert sel.meta["static_fallback"] is True
    assert len(sel) == int(0.125 * 64 * G * G)
    assert len(np.unique(sel.positions[:, 0])) > 1  # more than the context frame


def test_brief_object_is_selected(clips):
    clip = clips["blink_h264"]
    visible = np.flatnonzero(clip.boxes[:64, 0] >= 0)
    assert len(visible) == 4
    sel = patchify(clip.path, _cfg(G * G + 256))
    mask = selected_mask(sel)
    cur = object_patch_overlap(clip, np.arange(64), SIZE, P) >= 0.5
    # The object is still while visible: the codec signals its appearance (and disappearance) only.
    first = visible[0]
    assert mask[first][cur[first]].mean() >= 0.9, "the object's patches must be selected when it appears"
    assert mask[visible[-1] + 1][cur[first]].mean() >= 0.9, "and where it was when it vanishes"


def test_deterministic(clips):
    a = patchify(clips["pan_h264"].path, _cfg(2048))
    b = patchify(clips["pan_h264"].path, _cfg(2048))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("mode", ["codec", "random", "frames"])
def test_video_settings_hold_what_shapes_a_videos_selection(clips, mode):
    """Settings left out of video_settings do not change a video's patches; settings kept in do."""
    path = clips["mover_h264"].path

    def run(cfg):
        sel = patchify(path, cfg)
        return sel.positions.tobytes() + sel.pixels.tobytes()

    base = CodecConfig(mode=mode, decode=DecodeConfig(num_frames=16, input_size=SIZE))
    dropped = set(dataclasses.asdict(base)) - set(video_settings(base))
    other = dataclasses.replace(base, num_frames=4, image_max_side=64, image_max_cells=4, image_cell=28)
    changed = {k for k in dataclasses.asdict(base) if getattr(base, k) != getattr(other, k)}
    if mode == "frames":
        assert "num_frames" not in dropped and run(other) != run(base)  # its frame count is read
    else:
        assert changed <= dropped and video_settings(other) == video_settings(base)
        assert run(other) == run(base)
    assert video_settings(dataclasses.replace(base, patch_size=16)) != video_settings(base)


def test_positions_sorted_and_pixels_match_frames(clips):
    sel, canvas = patchify_with_canvas(clips["mover_h264"].path, _cfg(2048))
    assert len(sel) == 2048 and sel.positions.dtype == np.int32
    keys = sel.positions[:, 0] * 10**6 + sel.positions[:, 1] * 10**3 + sel.positions[:, 2]
    assert (np.diff(keys) > 0).all()
    t_to_i = {int(t): i for i, t in enumerate(canvas.frame_t)}
    for (t, h, w), px in zip(sel.positions[::97], sel.pixels[::97]):
        ref = canvas.frames[t_to_i[int(t)], h * P : (h + 1) * P, w * P : (w + 1) * P].transpose(2, 0, 1)
        np.testing.assert_array_equal(px, ref)


@pytest.mark.parametrize("mode,expected", [("frames", 8 * G * G), ("collage", 8 * G * G)])
def test_other_video_modes(clips, mode, expected):
    sel = patchify(clips["mover_h264"].path, CodecConfig(mode=mode, decode=DecodeConfig(input_size=SIZE)))
    assert len(sel) == expected and sel.num_frames == 8
    if mode == "frames":
        assert sorted(set(sel.positions[:, 0].tolist())) == [0, 9, 18, 27, 36, 45, 54, 63]
    else:
        assert (sel.positions[:, 0] == 0).all() and sel.positions[:, 1].max() == 8 * G - 1


def test_image_mode_native_resolution(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (61, 97, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    sel = patchify(tmp_path / "x.png")
    assert sel.grid_hw == (4, 7)  # 61 → 56, 97 → 98
    assert len(sel) == 28 and (sel.positions[:, 0] == 0).all()


def test_budget_larger_than_clip_is_a_cap(clips):
    sel = patchify(clips["mover_h264"].path, _cfg(64 * G * G + 1))
    assert len(sel) == 64 * G * G and sel.meta["budget_capped"]


def test_grid_scores_exact_and_pooled():
    from encoder.codec.pipeline import grid_scores
    from encoder.codec.saliency import patch_scores

    rng = np.random.default_rng(0)
    sal = rng.random((3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(grid_scores(sal, 16), patch_scores(sal, 7), rtol=1e-6)  # 224/14 on 112 maps
    pooled = grid_scores(sal, 32)  # 448/14 on 112 maps: 3.5-px footprints
    assert pooled.shape == (3, 32, 32)
    np.testing.assert_allclose(pooled.sum(axis=(1, 2)), sal.sum(axis=(1, 2)), rtol=0.05)
    hot = np.zeros((1, 112, 112), np.float32)
    hot[0, 50:54, 70:74] = 1.0
    assert np.unravel_index(grid_scores(hot, 32)[0].argmax(), (32, 32)) in {
        (14, 20),
        (14, 21),
        (15, 20),
        (15, 21),
    }


@pytest.mark.parametrize("size", [224, 448])
def test_mover_selected_at_both_input_sizes(clips, size):
    clip = clips["mover_h264"]
    g = size // P
    cfg = CodecConfig(decode=DecodeConfig(num_frames=64, input_size=size), select=SelectConfig(budget=0.125))
    sel = patchify(clip.path, cfg)
    assert sel.grid_hw == (g, g) and len(sel) == int(0.125 * 64 * g * g)
    obj = object_patch_overlap(clip, sel.frame_ids, size, P)[1:] >= 0.5
    t_to_i = {int(t): i for i, t in enumerate(sel.frame_t)}
    mask = np.zeros((sel.num_frames, g, g), dtype=bool)
    mask[[t_to_i[int(t)] for t in sel.positions[:, 0]], sel.positions[:, 1], sel.positions[:, 2]] = True
    assert mask[1:][obj].mean() >= 0.9


@pytest.mark.parametrize("select", [{}, {"min_score": 1.0}])
def test_random_mode_keeps_codec_count_and_context(clips, select):
    """The intervention control: same count and context frame as codec, the rest drawn from frames
    1..T-1; the mover is found far less often than by codec scoring; the draw is seeded."""
    clip = clips["mover_h264"]
    codec = patchify(clip.path, _cfg(_object_budget(clip), **select))
    rand_cfg = _cfg(_object_budget(clip), **select)
    rand_cfg.mode = "random"
    rand = patchify(clip.path, rand_cfg)
    assert len(rand) == len(codec) and rand.meta["mode"] == "random"
    ctx = rand.positions[:, 0] == 0
    np.testing.assert_array_equal(rand.positions[ctx], codec.positions[codec.positions[:, 0] == 0])
    assert int(ctx.sum()) == G * G == rand.meta["context_patches"]
    assert not np.array_equal(rand.positions, codec.positions)
    assert len(np.unique(rand.positions[~ctx][:, 0])) > 16  # spread over the clip's frames
    np.testing.assert_array_equal(
        patchify(clip.path, rand_cfg).positions, rand.positions
    )  # same clip, same draw
    rand_cfg.select.seed = 1
    assert not np.array_equal(patchify(clip.path, rand_cfg).positions, rand.positions)
    codec_recall, rand_recall = coverage(codec, clip)[0], coverage(rand, clip)[0]
    assert codec_recall >= 0.9 and rand_recall < 0.5 * codec_recall
    frames = {int(t): i for i, t in enumerate(rand.frame_t)}
    canvas = patchify_with_canvas(clip.path, rand_cfg)[1].frames
    for (t, h, w), px in zip(rand.positions[:20], rand.pixels[:20]):  # pixels come from their frames
        np.testing.assert_array_equal(
            px, canvas[frames[int(t)], h * P : (h + 1) * P, w * P : (w + 1) * P].transpose(2, 0, 1)
        )


def test_a_budget_above_a_short_clip_is_a_cap(video_dir):
    """A 1-frame clip with a 1024-patch budget gives every patch it has, and meta says so."""
    from encoder.codec.synthetic import make_clip

    one = make_clip(video_dir / "one_frame.mp4", "mover", codec="h264", width=112, height=112, num_frames=1)
    cfg = CodecConfig(decode=DecodeConfig(num_frames=64, input_size=224), select=SelectConfig(budget=1024))
    sel = patchify(one.path, cfg)
    assert len(sel) == 256 and sel.meta["budget_capped"] and sel.meta["budget_requested"] == 1024
    assert sel.meta["budget"] == 256
    exact = patchify(
        one.path,
        CodecConfig(decode=DecodeConfig(num_frames=64, input_size=224), select=SelectConfig(budget=256)),
    )
    assert len(exact) == 256 and not exact.meta["budget_capped"]
