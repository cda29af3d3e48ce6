"""The tower contract, for every tower of the registry (open_clip's habit: a new tower is tested by
adding it to ``TOWERS``): its spec needs no weights and matches the built tower, its config check
rejects an unknown option in one error, one token per counted LLM token on a dense clip, and a saved
tower reloads to the same outputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from encoder.codec import PatchSelection
from llava_ov.data.dataset import pack_media
from llava_ov.model.towers import TOWERS, TowerConfig, build_tower, tower_spec


def dense_clip(frames: int, grid: tuple[int, int], patch: int) -> PatchSelection:
    """Every patch of ``frames`` random frames (what the ``frames`` mode gives a tower)."""
    t, h, w = np.meshgrid(np.arange(frames), np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    positions = np.stack([t.ravel() * 4, h.ravel(), w.ravel()], 1).astype(np.int32)
    pixels = np.random.default_rng(0).integers(0, 256, (len(positions), 3, patch, patch), dtype=np.uint8)
    return PatchSelection(
        positions=positions,
        pixels=pixels,
        scores=np.ones(len(positions), np.float32),
        frame_ids=np.arange(frames, dtype=np.int64),
        frame_t=np.arange(frames, dtype=np.int32) * 4,
        patch_size=patch,
        grid_hw=grid,
        meta={"mode": "frames"},
    )


def config(name: str, **kw) -> TowerConfig:
    return dataclasses.replace(TowerConfig(), name=name, size="debug", output_layer=-1, **kw)


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_spec_check_and_build_agree(name):
    cfg = config(name)
    cfg.validate()
    spec = tower_spec(cfg)
    assert TOWERS[name].name == name and spec.patch_size in (14, 16)
    assert TOWERS[name].merges_itself == (spec.merge > 1)
    with pytest.raises(ValueError, match="no_such_option"):
        config(name, overrides={"no_such_option": 1}).validate()
    torch.manual_seed(0)
    assert build_tower(cfg).spec == spec


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_tokens_match_the_counter_and_a_saved_tower_reloads(name, tmp_path):
    cfg = config(name)
    torch.manual_seed(0)
    tower = build_tower(cfg).eval()
    spec = tower.spec
    sel = dense_clip(2 * spec.frames_per_token, (2 * spec.merge, 3 * spec.merge), spec.patch_size)
    n = spec.token_counter()(sel)
    media = pack_media([sel], ["video"], [n], spec.patch_size)
    with torch.no_grad():
        out = tower(media)
    assert out.features.shape == (n, tower.hidden_size) and out.counts == [n]
    assert torch.isfinite(out.features).all()
    tower.save_pretrained(tmp_path / name)
    again = build_tower(dataclasses.replace(cfg, path=str(tmp_path / name))).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(media).features, out.features)


# ----------------------------------------------------------------------------- options


#: A real option of each tower (a value, and that key misspelt).
OPTION = {"ov_encoder": ("rope_mode", "clean"), "siglip2": ("hidden_size", 48), "qwen3_vit": ("depth", 1)}


def test_every_registered_tower_has_its_own_options_section():
    own = {"name", "path", "size", "overrides", "output_layer"}
    assert {f.name for f in dataclasses.fields(TowerConfig)} == own | set(TOWERS)
    assert set(OPTION) == set(TOWERS), "add the new tower's option to OPTION"


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_a_tower_section_is_typed_and_strict(name):
    from encoder.typed_config import ConfigError
    from llava_ov.model import ModelConfig

    key, value = OPTION[name]
    assert key in {f.name for f in dataclasses.fields(TOWERS[name].options)}
    cfg = ModelConfig.from_dict({"tower": {"name": name, "output_layer": -1, name: {key: str(value)}}})
    assert getattr(cfg.tower, name) == {key: value} and cfg.tower.options == {key: value}  # coerced
    typo = key[:-1]
    with pytest.raises(
        ConfigError, match=rf"unknown config key 'tower\.{name}\.{typo}' \(did you mean '{key}'"
    ):
        ModelConfig.from_dict({"tower": {"name": name, "output_layer": -1, name: {typo: value}}})
    other = next(n for n in TOWERS if n != name)  # an inactive tower's section is checked as strictly
    with pytest.raises(ConfigError, match=rf"unknown config key 'model\.tower\.{other}\.nope'"):
        config(name, **{other: {"nope": 1}}).validate()


def test_the_options_dataclasses_hold_the_keys_each_tower_accepts():
    from llava_ov.model.towers.qwen3_vit_checkpoint import OVERRIDE_KEYS
    from llava_ov.model.towers.siglip2 import config_fields

    def keys(name: str) -> set[str]:
        return {f.name for f in dataclasses.fields(TOWERS[name].options)}

    assert keys("siglip2") == {*config_fields(), "attn_implementation"}
    assert keys("qwen3_vit") == set(OVERRIDE_KEYS)
