"""save_pretrained / from_pretrained round trip and loading a released-layout checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from ovenc_reference import ref_encode_frames
from safetensors.torch import save_file

from encoder.model import OVEncoder, get_config
from encoder.model.checkpoint import load_state_dict_strict

D, FF, LAYERS, HEADS, P = 64, 128, 2, 2, 14


def released_state_dict(seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Random weights with exactly the released names and shapes (notes §1), built independently."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "embeddings.patch_embedding.weight": (D, 3, P, P),
        "head.probe": (1, 1, D),
        "head.attention.in_proj_weight": (3 * D, D),
        "head.attention.in_proj_bias": (3 * D,),
        "head.attention.out_proj.weight": (D, D),
        "head.attention.out_proj.bias": (D,),
        "head.norm.weight": (D,),
        "head.mlp.fc1.weight": (FF, D),
        "head.mlp.fc1.bias": (FF,),
        "head.mlp.fc2.weight": (D, FF),
        "head.mlp.fc2.bias": (D,),
    }
    for norm in ("layernorm_pre", "layernorm_post"):
        shapes |= {f"{norm}.weight": (D,), f"{norm}.bias": (D,)}
    for i in range(LAYERS):
        p = f"encoder.layers.{i}"
        for n in "qkv":
            shapes |= {f"{p}.self_attn.{n}_proj.weight": (D, D), f"{p}.self_attn.{n}_proj.bias": (D,)}
        shapes |= {f"{p}.self_attn.out_proj.weight": (D, D), f"{p}.self_attn.out_proj.bias": (D,)}
        for n in (1, 2):
            shapes |= {f"{p}.layer_norm{n}.weight": (D,), f"{p}.layer_norm{n}.bias": (D,)}
        shapes |= {
            f"{p}.mlp.fc1.weight": (FF, D),
            f"{p}.mlp.fc1.bias": (FF,),
            f"{p}.mlp.fc2.weight": (D, FF),
            f"{p}.mlp.fc2.bias": (D,),
        }
    sd = {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items()}
    for k in sd:
        if k.endswith("norm.weight") or ("norm" in k and k.endswith(".weight")):
            sd[k] = 1.0 + sd[k]
    return {k: v.to(dtype) for k, v in sd.items()}


RELEASED_CONFIG = {
    "architectures": ["OneVisionEncoderModel"],
    "auto_map": {
        "AutoConfig": "configuration_onevision_encoder.OneVisionEncoderConfig",
        "AutoModel": "modeling_onevision_encoder.OneVisionEncoderModel",
    },
    "model_type": "onevision_encoder",
    "hidden_size": D,
    "intermediate_size": FF,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_channels": 3,
    "image_size": 448,
    "patch_size": P,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "layer_norm_type": "layer_norm",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "rope_theta": 10000.0,
    "rope_temporal_size": 64,
    "use_head": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.53.1",
}


def _write_released(path, sd):
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    (path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "do_normalize": True})
    )


@pytest.mark.parametrize("abs_pos", ["none", "sincos3d"])
def test_save_load_round_trip_is_bitwise(tmp_path, abs_pos):
    torch.manual_seed(0)
    cfg = get_config("debug", rope_mode="clean", layer_norm_type="rms_norm", abs_pos_embed=abs_pos)
    model = OVEncoder(cfg).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = OVEncoder.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    x = torch.randint(0, 256, (2, 3, 28, 42), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model.forward_images(x), loaded.forward_images(x)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(a.pooled, b.pooled)


def test_load_released_layout(tmp_path):
    sd = released_state_dict()
    _write_released(tmp_path / "released", sd)
    model = OVEncoder.from_pretrained(tmp_path / "released").eval()
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.rope_mode) == (D, LAYERS, "compatible")
    assert cfg.image_mean == (0.5, 0.4, 0.3) and cfg.image_std == (0.2, 0.25, 0.3)
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert torch.equal(own[k], v.float()), k
    img = torch.randn(3, 2 * P, 2 * P)
    with torch.no_grad():
        out = model.forward_images([img])
        last, _, pooled = ref_encode_frames(
            {k: v.float() for k, v in sd.items()}, img[None], [0], HEADS, LAYERS, P
        )
    torch.testing.assert_close(out.last_hidden_state, last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled[0], pooled, atol=1e-5, rtol=1e-5)


def test_load_by_hub_id_uses_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    _write_released(tmp_path / "snap", released_state_dict())
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(repo_id)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = OVEncoder.from_pretrained("lmms-lab-encoder/onevision-encoder-large", dtype=torch.bfloat16)
    assert calls == ["lmms-lab-encoder/onevision-encoder-large"]
    assert all(p.requires_grad and not p.is_meta for p in model.parameters())
    assert model.embeddings.patch_embedding.weight.dtype == torch.bfloat16


def test_strict_key_errors(tmp_path):
    model = OVEncoder(get_config("debug", num_hidden_layers=LAYERS))
    sd = {k: v.float() for k, v in released_state_dict().items()}
    load_state_dict_strict(model, dict(sd))  # exact match loads
    bad = dict(sd)
    bad.pop("head.norm.weight")
    bad["video_rope.inv_freq_t"] = torch.zeros(8)
    with pytest.raises(
        ValueError, match=r"(?s)missing keys \(1\).*head\.norm\.weight.*unexpected keys.*video_rope"
    ):
        load_state_dict_strict(model, bad)
    bad = dict(sd)
    bad["head.probe"] = torch.zeros(1, 1, D + 1)
    with pytest.raises(ValueError, match=r"shape mismatches.*head\.probe"):
        load_state_dict_strict(model, bad)
    prefixed = {f"vision_model.{k}": v for k, v in sd.items()}
    load_state_dict_strict(model, prefixed)
    with pytest.raises(ValueError, match="no config.json"):
        OVEncoder.from_pretrained(tmp_path)
