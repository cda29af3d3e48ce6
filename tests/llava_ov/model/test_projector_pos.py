"""The projector's optional fixed 3D sin-cos position embedding (``ProjectorConfig.pos_embed``)."""

from __future__ import annotations

import json

import pytest
import torch
from lmm_model_support import batch_of, mixed_items

from encoder.model.posembed import sincos3d
from llava_ov.data.dataset import MediaBatch
from llava_ov.model import LlavaOVModel, build_model, debug_config
from llava_ov.model.config import ProjectorConfig
from llava_ov.model.merge import merge_plan
from llava_ov.model.projector import MLPProjector, merged_positions


def _grid(t: int, h: int, w: int) -> torch.Tensor:
    tt, hh, ww = torch.meshgrid(torch.arange(t) * 4, torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3).to(torch.int32)


@pytest.mark.parametrize("dim", [64, 65, 256])
def test_sincos3d_shape_deterministic_and_distinct(dim):
    pos = _grid(16, 8, 8)  # t on the 64-frame grid (stride 4), 8 x 8 patches
    emb = sincos3d(pos, dim)
    assert emb.shape == (len(pos), dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, sincos3d(pos.clone(), dim), rtol=0, atol=0)
    assert torch.isfinite(emb).all() and emb.abs().max() <= 1.0
    # every pair of distinct positions gets a clearly distinct vector
    dist = torch.cdist(emb.double(), emb.double())
    off = dist + torch.eye(len(pos), dtype=torch.float64) * 1e9
    assert off.min() > 0.05


def test_sincos3d_separates_the_axes():
    base = sincos3d(torch.tensor([[8, 3, 5]]), 64)
    for axis in range(3):  # moving along one axis changes only that axis's channel block
        moved = torch.tensor([[8, 3, 5]])
        moved[0, axis] += 1
        changed = (sincos3d(moved, 64) - base).abs()[0] > 1e-6
        block = torch.zeros(64, dtype=torch.bool)
        block[{0: slice(0, 16), 1: slice(16, 40), 2: slice(40, 64)}[axis]] = True  # 4 : 6 : 6 of 64
        assert changed[block].any() and not changed[~block].any()
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        sincos3d(torch.zeros(4, 2), 64)


def test_projector_adds_embedding_to_input_and_needs_positions():
    torch.manual_seed(0)
    plain = MLPProjector(16, 32)
    pos = MLPProjector(16, 32, pos_embed="sincos3d")
    pos.load_state_dict(plain.state_dict())  # no parameters of its own: same state dict
    assert set(pos.state_dict()) == set(plain.state_dict())
    x, p = torch.randn(10, 16), _grid(10, 1, 1)
    torch.testing.assert_close(pos(x, p), plain(x + sincos3d(p, 16)))
    assert not torch.allclose(pos(x, p), plain(x))
    with pytest.raises(ValueError, match="position"):
        pos(x)
    with pytest.raises(ValueError, match="pos_embed"):
        ProjectorConfig(pos_embed="learned").validate()


def test_merged_positions_take_the_merged_token_cell():
    pos = _grid(2, 4, 4)
    plan = merge_plan(pos, torch.tensor([0, len(pos)]))
    merged = merged_positions(pos, plan)
    assert merged.tolist() == [[t, h, w] for t in (0, 4) for h in range(2) for w in range(2)]


def test_none_leaves_outputs_unchanged_and_sincos_changes_them(tokenizer):
    torch.manual_seed(0)
    base = build_model(debug_config(), tokenizer).eval()
    cfg = debug_config()
    cfg.projector.pos_embed = "sincos3d"
    with_pos = build_model(cfg, tokenizer).eval()
    with_pos.load_state_dict(base.state_dict())
    batch = batch_of(mixed_items(tokenizer, base.token_counter()), tokenizer)
    with torch.no_grad():
        ref = base(batch, return_logits=True).logits
        # "none": the projector ignores positions even when a caller passes them
        feats = torch.randn(6, base.vision_tower.hidden_size)
        torch.testing.assert_close(
            base.projector(feats, _grid(6, 1, 1)), base.projector(feats), rtol=0, atol=0
        )
        assert not torch.allclose(with_pos(batch, return_logits=True).logits, ref)


@pytest.mark.parametrize("merge", [1, 2])
def test_encode_media_with_positions(tokenizer, merge):
    cfg = debug_config(merge=merge)
    cfg.projector.pos_embed = "sincos3d"
    model = build_model(cfg, tokenizer).eval()
    pos = _grid(2, 4, 4)
    p = model.vision_tower.patch_size
    media = MediaBatch(
        pixels=torch.randint(0, 255, (len(pos), 3, p, p), dtype=torch.uint8),
        positions=pos,
        cu_seqlens=torch.tensor([0, len(pos)], dtype=torch.int32),
        num_tokens=torch.tensor([len(pos) // (4 if merge == 2 else 1)], dtype=torch.int32),
        grid_hw=torch.tensor([[4, 4]], dtype=torch.int32),
        kinds=["video"],
        patch_size=p,
    )
    with torch.no_grad():
        out = model.encode_media(media)
    assert out.shape == (len(pos) // (4 if merge == 2 else 1), model.llm.get_input_embeddings().embedding_dim)


def test_save_load_keeps_the_option(tokenizer, tmp_path):
    cfg = debug_config()
    cfg.projector.pos_embed = "sincos3d"
    torch.manual_seed(1)
    model = build_model(cfg, tokenizer).eval()
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((ckpt / "llava_ov.json").read_text())["model"]["projector"]["pos_embed"] == "sincos3d"
    loaded = LlavaOVModel.from_pretrained(ckpt).eval()
    assert loaded.config.projector.pos_embed == "sincos3d" and loaded.projector.pos_embed == "sincos3d"
    batch = batch_of(mixed_items(tokenizer, model.token_counter()), tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(batch, return_logits=True).logits, model(batch, return_logits=True).logits, rtol=0, atol=0
        )
