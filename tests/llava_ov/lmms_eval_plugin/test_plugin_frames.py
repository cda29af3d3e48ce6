"""Clips given as frames (a folder of image files, a list of PIL frames or of image paths: what
MVBench's episodic_reasoning and frame-list tasks hand over) against the same clip as an H.264 file:
real PNG frames on disk, real encoding and decoding, the processor the plugin uses."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from encoder.codec import CodecConfig, VideoDecodeError, patchify
from encoder.codec.synthetic import render_scene, write_video
from llava_ov.infer.processor import NOT_FRAMES, LlavaOVProcessor, frame_files, sample_frames

pytest.importorskip("lmms_eval")

from llava_ov.lmms_eval_plugin.media import failure_reason, media_list  # noqa: E402


def codec(mode: str, frames: int) -> CodecConfig:
    cfg = CodecConfig(mode=mode, num_frames=frames)
    cfg.decode.num_frames = frames
    cfg.decode.input_size = 56
    cfg.select.budget = 64
    return cfg


def write_clip(folder, n: int, scene: str = "mover"):
    """(frames [n, 96, 96, 3], folder of PNGs written in shuffled order, the same frames as H.264)."""
    frames = render_scene(scene, 96, 96, n, seed=1)[0]
    out = folder / "frames"
    out.mkdir()
    for i in np.random.default_rng(0).permutation(n):  # creation order is not name order
        Image.fromarray(frames[i]).save(out / f"{i:05d}.png")
    clip = folder / "clip.mp4"
    write_video(clip, frames, fps=8, gop=n, crf=12)
    return frames, out, clip


def positions(sel) -> set:
    return {tuple(p) for p in sel.positions.tolist()}


@pytest.mark.parametrize(
    "mode,n,frames,min_iou",
    [
        ("codec", 16, 16, 1.0),  # every frame sampled: the same frames, the same motion
        ("codec", 24, 16, 0.9),  # sampled first: motion between consecutive sampled frames
        ("frames", 40, 8, 1.0),  # dense mode: the same 8 frames
    ],
)
def test_frame_folder_and_lists_match_the_h264_clip(tmp_path, mode, n, frames, min_iou):
    src, folder, clip = write_clip(tmp_path, n)
    proc = LlavaOVProcessor(None, codec(mode, frames))
    ref = patchify(clip, proc.codec)
    sel, kind = proc.load_media(folder)
    assert kind == "video" and sel.meta["source"] == "frames" and sel.meta["num_frames_total"] == n
    assert sel.meta["path"] == str(folder) and sel.meta["mode"] == mode
    assert sel.frame_ids.tolist() == ref.frame_ids.tolist() == sample_frames(n, proc.codec).tolist()
    assert sel.frame_t.tolist() == ref.frame_t.tolist() and len(sel) == len(ref)
    iou = len(positions(sel) & positions(ref)) / len(positions(sel) | positions(ref))
    assert iou >= min_iou, iou
    if iou == 1.0:  # the same patches: pixels within the two encodings' error
        diff = np.abs(sel.pixels.astype(np.int16) - ref.pixels.astype(np.int16))
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 12, (diff.mean(), np.percentile(diff, 99))
    # a list of PIL frames and a list of the image paths are the same clip as the folder, exactly
    for other in ([Image.fromarray(f) for f in src], [str(p) for p in frame_files(folder)]):
        alt, kind = proc.load_media(other)
        assert kind == "video"
        np.testing.assert_array_equal(alt.positions, sel.positions)
        np.testing.assert_array_equal(alt.pixels, sel.pixels)
        np.testing.assert_array_equal(alt.frame_ids, sel.frame_ids)


def test_frames_are_sorted_by_name_and_only_sampled_ones_are_opened(tmp_path):
    src, folder, _ = write_clip(tmp_path, 40)
    proc = LlavaOVProcessor(None, codec("frames", 8))
    picked = set(sample_frames(40, proc.codec).tolist())
    assert len(picked) == 8 and [f.name for f in frame_files(folder)] == [f"{i:05d}.png" for i in range(40)]
    skipped = min(set(range(40)) - picked)
    (folder / f"{skipped:05d}.png").write_bytes(b"not a png")  # never opened
    (folder / "notes.txt").write_text("ignored")
    sel = proc.load_media(folder)[0]
    assert sel.frame_ids.tolist() == sorted(picked)
    first = sel.pixels[sel.positions[:, 0] == 0]
    direct = proc.load_media([Image.fromarray(src[i]) for i in sorted(picked)])[0]  # 8 of 8: all sampled
    np.testing.assert_array_equal(first, direct.pixels[direct.positions[:, 0] == 0])
    bad = folder / f"{min(picked):05d}.png"
    bad.write_bytes(b"not a png either")
    with pytest.raises(VideoDecodeError, match="not a readable image") as info:
        proc.load_media(folder)
    assert info.value.path == str(bad) and failure_reason(info.value) == "undecodable"


def test_folder_without_frames_and_missing_frames(tmp_path):
    proc = LlavaOVProcessor(None, codec("frames", 2))
    empty = tmp_path / "episode"
    empty.mkdir()
    (empty / "subtitles.srt").write_text("1\n")
    with pytest.raises(VideoDecodeError) as info:
        proc.load_media(empty)
    assert info.value.reason == NOT_FRAMES and info.value.path == str(empty)
    assert failure_reason(info.value) == "not frames"
    gone = [str(tmp_path / f"{i}.jpg") for i in range(6)]
    assert media_list(gone) == [gone]  # more than FRAME_LIST_MIN image paths: one clip
    with pytest.raises(VideoDecodeError, match="file not found") as info:
        proc.load_media(gone)
    assert failure_reason(info.value) == "missing"
    with pytest.raises(VideoDecodeError, match="empty frame list"):
        proc.load_frames([], "nothing")
