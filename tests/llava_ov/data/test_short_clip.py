"""A clip shorter than the budget in the LMM data path: every patch it has, one placeholder each."""

from __future__ import annotations

from encoder.codec import CodecConfig, DecodeConfig, SelectConfig
from encoder.codec.synthetic import make_clip
from llava_ov.data.dataset import make_item
from llava_ov.data.samples import MediaSample, decode_media


def test_short_clip_gives_every_patch_and_as_many_placeholders(tmp_path, tokenizer):
    clip = make_clip(tmp_path / "short.mp4", "mover", codec="h264", width=112, height=112, num_frames=2)
    codec = CodecConfig(decode=DecodeConfig(num_frames=16, input_size=112), select=SelectConfig(budget=1024))
    sel = decode_media("mp4", (tmp_path / "short.mp4").read_bytes(), codec)
    assert len(sel) == 2 * 64 and sel.meta["budget_capped"] and clip.num_frames == 2
    record = {
        "conversations": [
            {"from": "human", "value": "<video>\nWhat moves?"},
            {"from": "gpt", "value": "a square"},
        ]
    }
    item = make_item(MediaSample("k", record, [sel], ["video"], "src"), tokenizer)
    assert item.num_patches == 128
    ((start, end, kind),) = item.tokens.media_spans
    assert end - start == 128 and kind == "video"  # one placeholder per patch the clip has
