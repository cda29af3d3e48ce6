"""Inference, the processor: media (paths, PIL, frame lists), save / load of its settings, codec
overrides and the patch cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from infer_support import export_checkpoint, small_codec
from PIL import Image

from encoder.codec import CodecConfig, PatchCache, PatchSelection, VideoDecodeError, patchify, virtual_t
from encoder.codec.synthetic import render_scene
from llava_ov.infer import PROCESSOR_FILE, LlavaOVProcessor, codec_overrides
from llava_ov.model.merge import TokenCounter
from llava_ov.text import ChatFormat

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- processor: media


def test_pil_image_equals_png_path(processor, media):
    sel_path, kind_path = processor.load_media(media["image"])
    pil = Image.open(media["image"]).convert("RGB")
    sel_pil, kind_pil = processor.load_media(pil)
    assert kind_path == kind_pil == "image"
    assert sel_pil.meta["mode"] == "image" and sel_pil.grid_hw == sel_path.grid_hw == (2, 3)  # 30x45 → 28x42
    np.testing.assert_array_equal(sel_pil.positions, sel_path.positions)
    np.testing.assert_array_equal(sel_pil.pixels, sel_path.pixels)
    assert len(sel_pil) == 6 and set(sel_pil.positions[:, 0].tolist()) == {0}


def test_frame_list_is_a_real_codec_encode(tokenizer):
    frames, boxes, _, _ = render_scene("mover", 56, 56, 8, seed=1)
    codec = CodecConfig()
    codec.decode.input_size, codec.decode.num_frames, codec.select.budget = 56, 8, 40
    proc = LlavaOVProcessor(tokenizer, codec)
    sel, kind = proc.load_media([Image.fromarray(f) for f in frames])
    assert kind == "video" and sel.meta["mode"] == "codec" and not sel.meta["static_fallback"]
    assert sel.meta["context_patches"] == 16  # frame 0 kept dense (4 x 4 grid)
    assert "bitstream" in sel.meta["motion_source"]  # motion vectors read from the H.264 written on the fly
    t_values = np.unique(sel.positions[:, 0])
    assert len(t_values) > 1 and t_values.max() - t_values.min() > 64 // 8
    np.testing.assert_array_equal(sel.frame_t, virtual_t(8))
    frame_of_t = {int(t): int(f) for t, f in zip(sel.frame_t, sel.frame_ids)}
    for (t, h, w), px in zip(sel.positions, sel.pixels):
        f = frame_of_t[int(t)]
        ref = frames[f, h * 14 : (h + 1) * 14, w * 14 : (w + 1) * 14].transpose(2, 0, 1).astype(int)
        assert np.abs(ref - px.astype(int)).mean() < 25  # the patch is that frame's content (lossy codec)
        if t > 0:  # non-context patches lie on the moving square (where it is or was a frame ago, give or
            # take one 8-px motion block)
            x0, y0 = boxes[f - 1 : f + 1, :2].min(0) - 8
            x1, y1 = boxes[f - 1 : f + 1, 2:].max(0) + 8
            assert w * 14 < x1 and (w + 1) * 14 > x0 and h * 14 < y1 and (h + 1) * 14 > y0, (t, h, w)


def test_load_media_errors_and_passthrough(processor):
    with pytest.raises(VideoDecodeError, match="empty frame list"):
        processor.load_media([])
    with pytest.raises(TypeError, match="unsupported media item int"):
        processor.load_media(3)
    with pytest.raises(TypeError, match="unsupported media item"):
        processor.load_media([Image.new("RGB", (28, 28)), "not a frame"])
    sel = PatchSelection(
        np.zeros((1, 3), np.int32),
        np.zeros((1, 3, 14, 14), np.uint8),
        np.ones(1),
        np.zeros(1, np.int64),
        np.zeros(1, np.int32),
        14,
        (1, 1),
        {"mode": "image"},
    )
    assert processor.load_media(sel) == (sel, "image")


# ----------------------------------------------------------------------------- processor: save / load


def test_processor_round_trip(tokenizer, tmp_path):
    codec = CodecConfig(mode="codec")
    codec.select.budget, codec.decode.input_size, codec.decode.num_frames = 96, 56, 16
    chat = ChatFormat(system_prompt="Answer briefly.", empty_think=True)
    out, proc = export_checkpoint(
        tokenizer, tmp_path / "ck", merge=2, processor_kwargs={"codec": codec, "chat": chat}
    )
    saved = json.loads((out / PROCESSOR_FILE).read_text())
    assert saved["format"] == "llava_ov_processor" and saved["version"] == 1
    loaded = LlavaOVProcessor.from_pretrained(out)
    assert loaded.codec == codec and loaded.chat == chat
    assert isinstance(loaded.tokens_for, TokenCounter) and loaded.tokens_for.merge == 2
    from lmm_model_support import dense_sel

    sel = dense_sel(2, 4, 4)
    assert loaded.tokens_for(sel) == TokenCounter(2)(sel) == 8 != len(sel)
    a, b = proc.prompt("Which way?", [sel]), loaded.prompt("Which way?", [sel])
    assert torch.equal(a.tokens.input_ids, b.tokens.input_ids)
    text = tokenizer.decode(b.tokens.input_ids)
    assert "Answer briefly." in text and "<think>" in text
    plain = LlavaOVProcessor(tokenizer, tokens_for=TokenCounter(2)).prompt("Which way?", [sel])
    assert len(plain.tokens.input_ids) < len(b.tokens.input_ids)  # the chat format is what was saved


def test_processor_version1_export_and_future_version(tokenizer, tmp_path):
    codec = small_codec()
    codec.select.budget = 77
    out, _ = export_checkpoint(tokenizer, tmp_path / "v1", merge=1, processor_kwargs={"codec": codec})
    (out / PROCESSOR_FILE).unlink()
    meta = json.loads((out / "llava_ov.json").read_text())
    import dataclasses

    meta["version"], meta["codec"] = 1, dataclasses.asdict(codec)
    (out / "llava_ov.json").write_text(json.dumps(meta))
    old = LlavaOVProcessor.from_pretrained(out)
    assert old.codec == codec and old.chat == ChatFormat() and old.tokens_for.merge == 1
    # a processor.json from a newer version of the code
    future = tmp_path / "future"
    shutil.copytree(out, future)
    (future / PROCESSOR_FILE).write_text(
        json.dumps({"format": "llava_ov_processor", "version": 99, "codec": {}, "chat": {}})
    )
    with pytest.raises(ValueError, match=rf"{future / PROCESSOR_FILE}.*version 99"):
        LlavaOVProcessor.from_pretrained(future)
    (future / PROCESSOR_FILE).write_text(json.dumps({"format": "something_else", "version": 1}))
    with pytest.raises(ValueError, match="something_else"):
        LlavaOVProcessor.from_pretrained(future)


# ----------------------------------------------------------------------------- codec overrides


def test_codec_overrides():
    base = CodecConfig()
    cfg = codec_overrides(base, budget=512, num_frames=16, input_size=112, image_max_side=336, mode=None)
    assert cfg.mode == "codec" and cfg.select.budget == 512 and cfg.decode.input_size == 112
    assert cfg.decode.num_frames == 16 and cfg.num_frames == base.num_frames and cfg.image_max_side == 336
    frames = codec_overrides(base, mode="frames", num_frames=4)  # resolved against the new mode
    assert (
        frames.mode == "frames"
        and frames.num_frames == 4
        and frames.decode.num_frames == base.decode.num_frames
    )
    assert codec_overrides(small_codec(), num_frames="3").num_frames == 3
    assert base == CodecConfig()  # the input is not modified
    assert codec_overrides(base) == base
    with pytest.raises(ValueError, match=r"unknown codec setting\(s\) \['frames'\]"):
        codec_overrides(base, frames=8)
    with pytest.raises(ValueError, match="mode"):
        codec_overrides(base, mode="gif")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        codec_overrides(base, input_size=100)


# ----------------------------------------------------------------------------- patch cache


def test_patch_cache(media, tmp_path):
    cfg = small_codec()
    cache = PatchCache(tmp_path / "cache")
    direct = patchify(media["video"], cfg)
    first = cache.patchify(media["video"], cfg)
    assert (cache.hits, cache.misses) == (0, 1)
    entry = cache.entry(media["video"], cfg)
    assert entry.is_file() and entry.parent.parent == tmp_path / "cache"
    second = cache.patchify(media["video"], cfg)
    assert (cache.hits, cache.misses) == (1, 1)
    for sel in (first, second):
        for name in ("positions", "pixels", "scores", "frame_ids", "frame_t"):
            np.testing.assert_array_equal(getattr(sel, name), getattr(direct, name))
        assert sel.grid_hw == direct.grid_hw and sel.patch_size == direct.patch_size
    # the same bytes under another name hit; another setting misses
    copy = tmp_path / "renamed.mp4"
    shutil.copyfile(media["video"], copy)
    np.testing.assert_array_equal(cache.patchify(copy, cfg).pixels, direct.pixels)
    assert (cache.hits, cache.misses) == (2, 1) and cache.entry(copy, cfg) == entry
    cfg3 = small_codec()
    cfg3.num_frames = 3
    three = cache.patchify(media["video"], cfg3)
    assert (
        (cache.hits, cache.misses) == (2, 2)
        and three.num_frames == 3
        and cache.entry(media["video"], cfg3) != entry
    )
    np.testing.assert_array_equal(three.pixels, patchify(media["video"], cfg3).pixels)
    # an image file through the cache equals patchify directly
    img = cache.patchify(media["image"], cfg)
    np.testing.assert_array_equal(img.pixels, patchify(media["image"], cfg).pixels)
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # a corrupt entry is recomputed and rewritten
    entry.write_bytes(b"garbage, not an npz")
    again = cache.patchify(media["video"], cfg)
    assert cache.misses == 4
    np.testing.assert_array_equal(again.pixels, direct.pixels)
    np.testing.assert_array_equal(PatchSelection.load(entry).pixels, direct.pixels)
    # a missing file names itself
    with pytest.raises(VideoDecodeError, match="missing_clip.mp4"):
        cache.patchify(media["missing"], cfg)


def test_patch_cache_recomputes_truncated_entry(media, tmp_path):
    cfg = small_codec()
    cache = PatchCache(tmp_path / "cache")
    direct = cache.patchify(media["video"], cfg)
    entry = cache.entry(media["video"], cfg)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated zip
    np.testing.assert_array_equal(cache.patchify(media["video"], cfg).pixels, direct.pixels)
    entry.write_bytes(b"")  # empty file
    np.testing.assert_array_equal(cache.patchify(media["video"], cfg).pixels, direct.pixels)
    assert (cache.hits, cache.misses) == (0, 3)
    # a hit through another name reports the file asked for
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(Path(media["video"]).read_bytes())
    assert cache.patchify(copy, cfg).meta["path"] == str(copy) and cache.hits == 1


def test_processor_uses_cache_for_files(model, media, tmp_path):
    cache = PatchCache(tmp_path / "c")
    proc = LlavaOVProcessor(model.tokenizer, small_codec(), tokens_for=model.token_counter(), cache=cache)
    proc.prompt("Q?", [media["video"], media["image"], media["pil"]])
    proc.prompt("Q?", [media["video"], media["image"]])
    assert (cache.hits, cache.misses) == (2, 2)  # files only; in-memory images are not cached
