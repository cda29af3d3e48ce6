"""Config presets, overrides, validation, parameter counts (meta device)."""

from __future__ import annotations

import pytest
import torch

from encoder.model import CLIP_MEAN, OVEncoder, ViTConfig, get_config
from encoder.model.config import config_from_dict


@pytest.mark.parametrize(
    "name,d,layers,heads", [("base", 768, 12, 12), ("large", 1024, 24, 16), ("huge", 1280, 32, 20)]
)
def test_presets(name, d, layers, heads):
    cfg = get_config(name)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (d, layers, heads)
    assert cfg.patch_size == 14 and cfg.head_dim == 64 and cfg.rope_theta == 10000.0
    assert cfg.rope_temporal_size == 64 and cfg.hidden_act == "gelu" and cfg.image_mean == CLIP_MEAN


def test_large_parameter_count_on_meta():
    with torch.device("meta"):
        model = OVEncoder(get_config("large"))
    n = model.num_parameters()
    assert 300e6 <= n <= 320e6, n
    assert next(model.parameters()).is_meta


def test_overrides_and_errors():
    cfg = get_config("debug", rope_mode="clean", layer_norm_type="rms_norm")
    assert cfg.rope_mode == "clean" and cfg.layer_norm_type == "rms_norm"
    with pytest.raises(ValueError, match="unknown ViTConfig field.*hiden_size"):
        get_config("base", hiden_size=3)
    with pytest.raises(ValueError, match="unknown config name"):
        get_config("gigantic")
    with pytest.raises(ValueError, match="divisible"):
        get_config("debug", num_attention_heads=3)
    with pytest.raises(ValueError, match="attn_backend"):
        get_config("debug", attn_backend="xformers")
    with pytest.raises(ValueError, match="GELU"):
        ViTConfig(hidden_act="relu")
    with pytest.raises(ValueError, match="cannot be split"):
        get_config("debug", hidden_size=40, num_attention_heads=2)
    assert cfg.replace(patch_size=16).patch_size == 16
    with pytest.raises(ValueError, match="unknown"):
        cfg.replace(nope=1)
    assert config_from_dict(cfg.to_dict()) == cfg
