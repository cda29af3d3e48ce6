"""The one budget rule: LLM visual tokens per clip → frames and resolution per tower; the token counts
it promises are the ones the data side counts on real patchified clips."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.codec import CodecConfig, patchify
from encoder.codec.synthetic import make_clip
from encoder.typed_config import merge_config
from llava_ov.model.budget import fit_grid, frame_plans, plan_codec, plan_frames, plan_image
from llava_ov.model.merge import TokenCounter
from llava_ov.model.towers import ALL_MODES, TowerSpec

OV = TowerSpec(14, modes=ALL_MODES)
SIGLIP2 = TowerSpec(16)
QWEN3 = TowerSpec(16, frames_per_token=2, merge=2)


@pytest.mark.parametrize(
    "spec, budget, frames, side",
    [
        (SIGLIP2, 2048, 8, 256),
        (SIGLIP2, 2048, 32, 128),
        (QWEN3, 2048, 64, 256),
        (SIGLIP2, 512, 8, 128),
        (QWEN3, 512, 16, 256),
    ],
)
def test_notes_examples(spec, budget, frames, side):
    plan = plan_frames(spec, budget, frames)
    assert (plan.height, plan.width) == (side, side) and plan.llm_tokens == budget


def test_tower_tokens_are_reported():
    assert plan_frames(SIGLIP2, 2048, 8).tower_tokens == 2048  # one patch per token
    assert plan_frames(SIGLIP2, 2048, 8, projector_merge=2).tower_tokens == 4 * 2048  # 512² frames
    assert plan_frames(QWEN3, 2048, 64).tower_tokens == 4 * 2048  # tubelet rows, 2x2 merged
    codec = plan_codec(OV, 2048, num_frames=64, input_size=224)
    assert codec.llm_tokens == codec.tower_tokens == 2048
    capped = plan_codec(OV, 64 * 256 + 1)  # above the 64-frame clip's 16,384 patches: a cap
    assert capped.llm_tokens == capped.tower_tokens == 64 * 256
    with pytest.raises(ValueError, match="input mode"):
        plan_codec(SIGLIP2, 512)


def test_fit_grid_keeps_aspect_under_budget():
    assert fit_grid(256) == (16, 16) and fit_grid(255) == (15, 15)
    gh, gw = fit_grid(100, (360, 640))
    assert gh * gw <= 100 and abs(gw / gh - 640 / 360) < 0.25 and (gh + 1) * (gw + 1) > 100
    assert fit_grid(3, (1, 100)) == (1, 3)
    with pytest.raises(ValueError):
        fit_grid(0)
    image = plan_image(SIGLIP2, 64, aspect_hw=(480, 640))
    assert image.llm_tokens <= 64 and image.width > image.height


def test_frame_plans_split_the_same_budget():
    plans = frame_plans(SIGLIP2, 1024, max_side=256)
    assert [p.num_frames for p in plans] == [4, 8, 16, 32, 64]  # 2 frames would need 352 px sides
    assert all(p.llm_tokens <= 1024 for p in plans)
    assert len({p.height for p in plans}) == len(plans)  # fewer frames, higher resolution


@pytest.mark.parametrize("wh", [(64, 64), (96, 64), (64, 112)], ids=["square", "landscape", "portrait"])
@pytest.mark.parametrize(
    "spec, projector_merge, frames",
    [
        (SIGLIP2, 1, 3),
        (SIGLIP2, 2, 4),
        (QWEN3, 1, 3),
        (QWEN3, 1, 4),
        (OV, 1, 5),
    ],
)
def test_plan_matches_the_counted_tokens_of_a_real_clip(tmp_path, spec, projector_merge, frames, wh):
    """Frames keep the source's aspect (odd frame counts, non-square sources): the counted tokens are
    the plan's for that aspect, within the budget, and the patch grid is the plan's frame size."""
    w, h = wh
    clip = make_clip(tmp_path / "c.mp4", "mover", width=w, height=h, num_frames=12)
    plan = plan_frames(spec, 48, frames, projector_merge)  # what the data path is given (square)
    sel = patchify(clip.path, merge_config(CodecConfig(), plan.codec_overrides(spec.patch_size)))
    native = plan_frames(spec, 48, frames, projector_merge, aspect_hw=(h, w))
    counter = TokenCounter(projector_merge, spec.frames_per_token, spec.merge)
    assert counter(sel) == native.llm_tokens <= 48
    assert sel.grid_hw == (native.height // spec.patch_size, native.width // spec.patch_size)
    assert len(sel) == frames * sel.grid_hw[0] * sel.grid_hw[1]
    if w == h:
        assert native == plan
    else:  # the long side stays the long one
        assert (sel.grid_hw[1] > sel.grid_hw[0]) == (w > h)


@pytest.mark.parametrize(
    "spec, projector_merge, mode",
    [
        (SIGLIP2, 1, "frames"),
        (SIGLIP2, 2, "frames"),
        (QWEN3, 1, "frames"),
        (OV, 1, "codec"),
        (OV, 1, "frames"),
    ],
)
@pytest.mark.parametrize("wh", [(640, 480), (300, 700), (20, 20)])
def test_images_follow_the_budget_rule(tmp_path, spec, projector_merge, mode, wh):
    """A still image takes at most ``budget`` LLM tokens at its own aspect, in every input mode."""
    from PIL import Image

    img = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (wh[1], wh[0], 3), np.uint8)).save(img)
    if mode == "codec":
        plan = plan_codec(spec, 60, num_frames=16, input_size=112)
    else:
        plan = plan_frames(spec, 60, 4, projector_merge)
    sel = patchify(img, merge_config(CodecConfig(), plan.codec_overrides(spec.patch_size)))
    expected = plan_image(spec, 60, projector_merge, aspect_hw=(wh[1], wh[0]))
    counter = TokenCounter(projector_merge, spec.frames_per_token, spec.merge)
    assert counter(sel) == expected.llm_tokens <= 60
    assert sel.grid_hw == (expected.height // spec.patch_size, expected.width // spec.patch_size)
    assert counter(sel) > 60 * 0.7  # the budget is spent, not wasted on rounding


def test_codec_plan_gives_its_budget(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", "mover", width=112, height=112, num_frames=16)
    for mode in ("codec", "random"):
        plan = plan_codec(OV, 100, num_frames=16, input_size=112, mode=mode)
        sel = patchify(clip.path, merge_config(CodecConfig(), plan.codec_overrides(14)))
        assert len(sel) == TokenCounter()(sel) == plan.llm_tokens == 100


@pytest.mark.parametrize(
    "name, mode",
    [("ov_encoder", "codec"), ("ov_encoder", "frames"), ("siglip2", "frames"), ("qwen3_vit", "frames")],
)
def test_every_tower_takes_non_square_clips_and_images_under_the_budget(tmp_path, name, mode):
    """Each tower (tiny random config) runs on what the plan cuts for it: a portrait clip with an odd
    frame count and a landscape image; its output rows are the tokens the data side counts, and the
    LLM tokens stay within the budget."""
    import torch
    from PIL import Image

    from llava_ov.data.dataset import pack_media
    from llava_ov.model import TowerConfig
    from llava_ov.model.budget import MediaConfig, media_plan
    from llava_ov.model.towers import build_tower, tower_spec

    torch.manual_seed(0)
    cfg = TowerConfig(name=name, size="debug", output_layer=-1)
    tower, spec = build_tower(cfg).eval(), tower_spec(cfg)
    plan = media_plan(MediaConfig(budget=40, mode=mode, clip_frames=8, input_size=56, frames=3), spec)
    codec = merge_config(CodecConfig(), plan.codec_overrides(spec.patch_size))
    clip = make_clip(tmp_path / "c.mp4", "mover", width=64, height=112, num_frames=10).path
    img = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 200, 3), np.uint8)).save(img)
    sels = [patchify(clip, codec), patchify(img, codec)]
    if mode == "frames":
        assert sels[0].grid_hw[0] > sels[0].grid_hw[1]  # portrait stays portrait
    assert sels[1].grid_hw[1] > sels[1].grid_hw[0]
    counter = TokenCounter(1, spec.frames_per_token, spec.merge)
    tokens = [counter(s) for s in sels]
    assert all(t <= 40 for t in tokens) and tokens[1] > 40 * 0.7
    with torch.no_grad():
        out = tower(pack_media(sels, ["video", "image"], tokens))
    assert out.counts == tokens and out.features.shape == (sum(tokens), tower.hidden_size)
    assert torch.isfinite(out.features).all()
