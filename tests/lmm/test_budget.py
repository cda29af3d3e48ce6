"""The one budget rule: LLM visual tokens per clip → frames and resolution per tower; the token counts
it promises are the ones the data side counts on real patchified clips."""

from __future__ import annotations

import pytest

from encoder.codec import CodecConfig, patchify
from encoder.codec.synthetic import make_clip
from encoder.config import merge
from llava_ov.model.budget import fit_grid, frame_plans, plan_codec, plan_frames, plan_image
from llava_ov.model.merge import TokenCounter
from llava_ov.model.towers import ALL_MODES, TowerSpec

OV = TowerSpec(14, modes=ALL_MODES)
SIGLIP2 = TowerSpec(16)
QWEN3 = TowerSpec(16, frames_per_token=2, merge=2)


@pytest.mark.parametrize("spec, budget, frames, side", [
    (SIGLIP2, 2048, 8, 256), (SIGLIP2, 2048, 32, 128), (QWEN3, 2048, 64, 256),
    (SIGLIP2, 512, 8, 128), (QWEN3, 512, 16, 256),
])
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


@pytest.mark.parametrize("spec, projector_merge, frames", [
    (SIGLIP2, 1, 3), (SIGLIP2, 2, 4), (QWEN3, 1, 3), (QWEN3, 1, 4), (OV, 1, 5),
])
def test_plan_matches_the_counted_tokens_of_a_real_clip(tmp_path, spec, projector_merge, frames):
    clip = make_clip(tmp_path / "c.mp4", "mover", width=96, height=64, num_frames=12)
    plan = plan_frames(spec, 48, frames, projector_merge)
    sel = patchify(clip.path, merge(CodecConfig(), plan.codec_overrides(spec.patch_size)))
    counter = TokenCounter(projector_merge, spec.frames_per_token, spec.merge)
    assert counter(sel) == plan.llm_tokens <= 48
    assert len(sel) == plan.num_frames * (plan.height // spec.patch_size) ** 2


def test_codec_plan_gives_its_budget(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", "mover", width=112, height=112, num_frames=16)
    for mode in ("codec", "random"):
        plan = plan_codec(OV, 100, num_frames=16, input_size=112, mode=mode)
        sel = patchify(clip.path, merge(CodecConfig(), plan.codec_overrides(14)))
        assert len(sel) == TokenCounter()(sel) == plan.llm_tokens == 100
