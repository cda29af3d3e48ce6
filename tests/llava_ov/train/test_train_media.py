"""The budget rule as a run setting: ``media.budget`` decides every stage's codec settings for the
configured tower, bad combinations fail when the config loads, and a run logs LLM visual tokens and
tower patches per sample."""

from __future__ import annotations

import pytest
from train_support import records, tiny_config

from encoder.typed_config import ConfigError
from llava_ov.train.build import stage_data_config
from llava_ov.train.trainer import train


def test_media_budget_sets_the_codec_settings(tmp_path):
    cfg = tiny_config(
        tmp_path, tmp_path / "data", **{"media.budget": 96, "media.clip_frames": 16, "media.input_size": 112}
    )
    codec = stage_data_config(cfg, "sft").codec
    assert codec["mode"] == "codec" and codec["select"]["budget"] == 96
    assert codec["decode"]["num_frames"] == 16 and codec["decode"]["input_size"] == 112
    frames = tiny_config(tmp_path, tmp_path / "data", **{"media.budget": 64, "media.mode": "frames"})
    codec = stage_data_config(frames, "sft").codec
    assert codec["mode"] == "frames" and codec["num_frames"] == 8 and codec["decode"]["input_size"] == 28


@pytest.mark.parametrize("tower, frames, side, patch", [("siglip2", 8, 64, 16), ("qwen3_vit", 16, 128, 16)])
def test_one_key_swaps_the_tower_at_the_same_budget(tmp_path, tower, frames, side, patch):
    """The embedded default with only model.tower.name changed: the same 128 LLM tokens per clip, as
    uniformly sampled frames sized for that tower (media.mode=auto)."""
    cfg = tiny_config(
        tmp_path, tmp_path / "data", **{"model.tower.name": tower, "model.tower.output_layer": -1}
    )
    codec = stage_data_config(cfg, "sft").codec
    assert codec["mode"] == "frames" and codec["patch_size"] == patch
    assert (codec["num_frames"], codec["decode"]["input_size"]) == (frames, side)
    assert cfg.model.tower.options == {}  # the OV-Encoder's own settings stay with it


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"media.budget": 4, "media.mode": "frames"}, "below one token"),
        ({"media.budget": 64, "media.mode": "sparse"}, "media.mode"),
        ({"media.budget": 64, "media.projector_merge": 2}, "projector"),  # derived from model.projector.merge
    ],
)
def test_bad_media_settings_fail_at_load(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, tmp_path / "data", **overrides)


@pytest.mark.slow
def test_run_logs_llm_tokens_and_tower_patches_per_sample(tmp_path):
    cfg = tiny_config(
        tmp_path / "run",
        tmp_path / "data",
        **{
            "media.budget": 64,
            "media.mode": "frames",
            "stages": "[sft]",
            "sft.init_from": "null",
            "sft.max_steps": 2,
            "sft.evaluate": False,
        },
    )
    train(cfg)
    recs = records(tmp_path / "run", "sft")
    # 8 frames of 2x2 patches (28 px): 32 LLM tokens per clip, one patch each
    assert all(r["llm_visual_tokens_per_sample"] == 32 and r["tower_patches_per_sample"] == 32 for r in recs)


def test_data_that_does_not_fit_the_tower_fails_before_training(tmp_path):
    """Without the budget rule the data config's codec clips (patch 14, codec mode) reach SigLIP2: one
    clear error when the stage's data is resolved (train() does it before any process group)."""
    cfg = tiny_config(tmp_path, tmp_path / "data", **{"media.budget": "null", "model.tower.name": "siglip2"})
    with pytest.raises(ConfigError, match="does not fit tower 'siglip2'"):
        stage_data_config(cfg, "sft")


@pytest.mark.parametrize("stage", ["align", "sft"])
def test_full_recipes_share_one_budget_and_load_offline(stage):
    """The OV-Encoder recipe and its SigLIP2 / Qwen3-ViT baselines: same LLM tokens per clip; loading
    them needs no hub (hub-id towers are not fetched to plan the data)."""
    from pathlib import Path

    from llava_ov.model.budget import media_plan
    from llava_ov.model.towers import tower_spec
    from llava_ov.train.config import load_train_config

    root = Path(__file__).resolve().parents[3] / "configs" / "train"
    plans = {}
    for name in ("ov_large", "siglip2", "qwen3vit"):
        cfg = load_train_config(root / f"{name}_qwen3_1.7b_{stage}.yaml")
        plans[cfg.model.tower.name] = media_plan(cfg.media, tower_spec(cfg.model.tower))
    assert {p.llm_tokens for p in plans.values()} == {2048}
    assert (
        plans["ov_encoder"].mode == "codec" and plans["siglip2"].mode == plans["qwen3_vit"].mode == "frames"
    )
    assert plans["qwen3_vit"].tower_tokens == 4 * 2048  # equal LLM tokens is not equal tower compute
