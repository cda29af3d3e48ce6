"""Robustness sweep: encodes as real files have them, each generated with PyAV here. Every case either
gives a correct selection (the mover's patches found) or one clear ``VideoDecodeError``."""

from __future__ import annotations

import av
import numpy as np
import pytest
from encode_support import encode

from encoder.codec import CodecConfig, DecodeConfig, SelectConfig, VideoDecodeError, patchify
from encoder.codec.synthetic import SyntheticClip, object_patch_overlap, render_scene

W, H, N, SIZE, P = 128, 96, 48, 112, 14
G = SIZE // P


def scene() -> tuple[np.ndarray, np.ndarray]:
    frames, boxes, _, _ = render_scene("mover", W, H, N, 0)
    return frames, boxes


def clip_of(path, boxes, width=W, height=H) -> SyntheticClip:
    return SyntheticClip(
        path=str(path),
        boxes=boxes,
        velocity=(0, 0),
        bg_velocity=(0, 0),
        scene="mover",
        codec="h264",
        width=width,
        height=height,
        num_frames=len(boxes),
        fps=30.0,
    )


def mover_recall(sel, clip) -> float:
    """Share of the object's patches (frames 1..T-1, ≥ half covered) that the selection holds."""
    t_to_i = {int(t): i for i, t in enumerate(sel.frame_t)}
    mask = np.zeros((sel.num_frames, *sel.grid_hw), dtype=bool)
    idx = np.array([t_to_i[int(t)] for t in sel.positions[:, 0]])
    mask[idx, sel.positions[:, 1], sel.positions[:, 2]] = True
    obj = object_patch_overlap(clip, sel.frame_ids, SIZE, P)[1:] >= 0.5
    return float(mask[1:][obj].mean()) if obj.any() else 0.0


def budget_for(clip, frames=16) -> int:
    ids = np.linspace(0, clip.num_frames - 1, frames).round().astype(int)
    return G * G + int(1.5 * (object_patch_overlap(clip, ids, SIZE, P)[1:] > 0).sum())


def run(path, clip, **decode) -> float:
    cfg = CodecConfig(
        decode=DecodeConfig(num_frames=16, input_size=SIZE, **decode),
        select=SelectConfig(budget=budget_for(clip)),
    )
    sel = patchify(path, cfg)
    assert len(sel) <= cfg.select.budget
    return mover_recall(sel, clip)


X264_DEFAULTS = {}  # preset medium: 3 B-frames (adaptive), 3 references, scene cut 40, keyint 250
CASES = {
    "h264_defaults_bframes": dict(codec="libx264", options=X264_DEFAULTS),
    "h264_bpyramid_4refs": dict(
        codec="libx264", options={"x264-params": "bframes=3:ref=4:b-pyramid=normal:keyint=24"}
    ),
    "hevc_open_gop": dict(
        codec="libx265", options={"x265-params": "open-gop=1:keyint=16:bframes=4:ref=3:log-level=error"}
    ),
    "h264_422": dict(codec="libx264", pix_fmt="yuv422p"),
    "h264_444": dict(codec="libx264", pix_fmt="yuv444p"),
    "h264_10bit": dict(codec="libx264", pix_fmt="yuv420p10le"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_realistic_encodes_find_the_mover(name, tmp_path):
    frames, boxes = scene()
    path = tmp_path / f"{name}.mp4"
    encode(path, frames, **CASES[name])
    recall = run(path, clip_of(path, boxes))
    assert recall >= 0.8, f"{name}: only {recall:.0%} of the mover's patches selected"


def test_vfr_with_bframes(tmp_path):
    frames, boxes = scene()
    times = np.cumsum(np.r_[0, np.random.default_rng(0).choice([1 / 30, 1 / 15, 1 / 60], N - 1)])
    path = tmp_path / "vfr_b.mkv"
    encode(path, frames, options={"x264-params": "bframes=2"}, times=times)
    # sampling is uniform in time: the ground truth follows the frame nearest each instant
    assert run(path, clip_of(path, boxes)) >= 0.8


@pytest.mark.parametrize("rotation", [180, 270])
def test_rotation_metadata(rotation, tmp_path):
    from encoder.codec.synthetic import _set_mp4_rotation

    frames, boxes = scene()
    path = tmp_path / f"rot{rotation}.mp4"
    encode(path, frames)
    _set_mp4_rotation(str(path), rotation, W, H)
    b = boxes.astype(np.int64).copy()
    shown = b.copy()
    present = b[:, 0] >= 0
    if rotation == 180:  # (x, y) -> (W - x, H - y)
        shown[:, 0], shown[:, 2] = W - b[:, 2], W - b[:, 0]
        shown[:, 1], shown[:, 3] = H - b[:, 3], H - b[:, 1]
        w, h = W, H
    else:  # 270° clockwise: (x, y) -> (y, W - x); the shown frame is H wide and W high
        shown[:, 0], shown[:, 2] = b[:, 1], b[:, 3]
        shown[:, 1], shown[:, 3] = W - b[:, 2], W - b[:, 0]
        w, h = H, W
    shown[~present] = b[~present]
    sel = patchify(
        path,
        CodecConfig(
            decode=DecodeConfig(num_frames=16, input_size=SIZE),
            select=SelectConfig(budget=budget_for(clip_of(path, shown, w, h))),
        ),
    )
    assert sel.meta["rotation"] == rotation
    assert mover_recall(sel, clip_of(path, shown, w, h)) >= 0.8


def test_stream_that_starts_without_a_keyframe(tmp_path):
    """Packets copied from the middle of a GOP: the frames before the first keyframe cannot be decoded;
    the rest are used (or one clear error if none is left)."""
    frames, boxes = scene()
    full = tmp_path / "full.mkv"
    encode(full, frames, options={"x264-params": "keyint=16:min-keyint=16:bframes=0:scenecut=0"})
    cut = tmp_path / "cut.mkv"
    with av.open(str(full)) as src, av.open(str(cut), "w") as dst:
        ins = src.streams.video[0]
        out = dst.add_stream_from_template(ins)
        for i, pkt in enumerate(src.demux(ins)):
            if pkt.dts is None or i < 5:  # drop the first keyframe and 4 frames after it
                continue
            pkt.stream = out
            dst.mux(pkt)
    try:
        sel = patchify(
            cut,
            CodecConfig(
                decode=DecodeConfig(num_frames=16, input_size=SIZE), select=SelectConfig(budget=G * G + 60)
            ),
        )
    except VideoDecodeError as e:
        assert str(cut) in str(e)
        return
    offset = 5  # decoded frame k of the cut file is source frame k + 5 at the earliest
    assert len(sel) > 0 and min(sel.frame_ids) >= 0
    assert sel.meta["num_frames_total"] <= N - offset


def test_two_video_streams_use_the_first(tmp_path):
    frames, boxes = scene()
    path = tmp_path / "two.mkv"
    encode(path, frames, extra_streams=1)
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 2
    assert run(path, clip_of(path, boxes)) >= 0.8


def test_bad_streams_raise_one_clear_error(tmp_path):
    frames, _ = scene()
    path = tmp_path / "ok.mp4"
    encode(path, frames)
    data = path.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 3] + bytes(len(data) // 3))  # truncated, zero-filled
    try:
        sel = patchify(broken, CodecConfig(decode=DecodeConfig(num_frames=16, input_size=SIZE)))
        assert len(sel) > 0  # what decodes is used
    except VideoDecodeError as e:
        assert str(broken) in str(e)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x01" + bytes(range(256)) * 40)
    with pytest.raises(VideoDecodeError):
        patchify(garbage, CodecConfig())


def test_h264_defaults_match_block_matching_and_bitstream(tmp_path):
    """On x264's default B-frame encode both motion sources find the mover."""
    frames, boxes = scene()
    path = tmp_path / "defaults.mp4"
    encode(path, frames)
    clip = clip_of(path, boxes)
    assert run(path, clip, motion="bitstream") >= 0.8
    assert run(path, clip, motion="estimated") >= 0.8


def test_bitstream_vectors_are_the_same_every_time(tmp_path):
    """x264 defaults (B-frames, 3 references): decoding twice gives the same vectors and the same
    selection. FFmpeg's frame-threaded export read some pictures before they were finished (a few
    frames of each clip got different, corrupt vectors on every run); the bitstream path decodes with
    one thread."""
    import hashlib

    from encoder.codec import decode_clip

    frames, *_ = render_scene("handheld", 320, 192, 120, 0)
    path = tmp_path / "x264.mp4"
    encode(path, frames)
    cfg = CodecConfig(decode=DecodeConfig(num_frames=64, input_size=SIZE), select=SelectConfig(budget=0.125))
    motion = {hashlib.md5(decode_clip(path, cfg.decode).motion.tobytes()).hexdigest() for _ in range(4)}
    picks = {patchify(path, cfg).positions.tobytes() for _ in range(2)}
    assert len(motion) == 1 and len(picks) == 1
