"""SigLIP2 NaFlex tower: processor parity, token counts, packing, strict checkpoints, config checks,
LMM step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lmm_model_support import batch_of, dense_sel, sample, sparse_sel
from PIL import Image
from safetensors.torch import load_file, save_file

from encoder.codec import CodecConfig, PatchSelection, patchify
from encoder.codec.pipeline import patchify_image
from encoder.codec.synthetic import make_clip
from encoder.typed_config import ConfigError
from llava_ov.data.dataset import LMMItem, MediaBatch, make_item, pack_media
from llava_ov.model import LLMConfig, ModelConfig, ProjectorConfig, TokenCounter, TowerConfig, build_model
from llava_ov.model.towers import tower_spec
from llava_ov.model.towers.siglip2 import (
    PRESETS,
    Siglip2Tower,
    build_siglip2,
    frame_layout,
    naflex_inputs,
    spec_siglip2,
    validate_siglip2,
)

P = 16
DEBUG = TowerConfig(name="siglip2", size="debug")


def media_of(sels: list[PatchSelection], counter: TokenCounter = TokenCounter(1)) -> MediaBatch:
    """The packed MediaBatch of ``sels`` (one media item each; LLM tokens per item from ``counter``)."""
    kinds = ["image" if s.meta.get("mode") == "image" else "video" for s in sels]
    return pack_media(sels, kinds, [counter(s) for s in sels])


def image_sel(h: int, w: int, seed: int = 0) -> tuple[PatchSelection, Image.Image]:
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return patchify_image(img, CodecConfig(mode="image", patch_size=P))[0], img


@pytest.fixture(scope="module")
def tower() -> Siglip2Tower:
    torch.manual_seed(0)
    return build_siglip2(DEBUG).eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[int, PatchSelection]:
    """Frames-mode selections (patch 16, 80 × 80 → 5 × 5 patches) with 3 and 5 frames of one video."""
    path = make_clip(
        tmp_path_factory.mktemp("siglip2") / "mover.mp4", "mover", width=96, height=80, num_frames=12, seed=2
    ).path
    out = {}
    for frames in (3, 5):
        cfg = CodecConfig(mode="frames", patch_size=P, num_frames=frames)
        cfg.decode.input_size = 80
        out[frames] = patchify(path, cfg)
    return out


# ----------------------------------------------------------------- input layout


def test_inputs_match_the_transformers_processor():
    from transformers import Siglip2ImageProcessorPil

    proc = Siglip2ImageProcessorPil()
    (a, img_a), (b, img_b) = image_sel(48, 80, 1), image_sel(32, 64, 2)  # 3 × 5 and 2 × 4 patches
    ours = naflex_inputs(media_of([a, b]))
    assert ours["pixel_values"].shape == (2, 15, P * P * 3)
    for i, (sel, img) in enumerate([(a, img_a), (b, img_b)]):
        n = len(sel)
        for kwargs in (dict(max_num_patches=n), dict(max_num_patches=64, do_resize=False)):
            ref = proc(images=[img], return_tensors="pt", **kwargs)  # sizes are multiples of 16: no resize
            assert ref["spatial_shapes"].tolist() == [list(sel.grid_hw)]
            assert ours["spatial_shapes"][i].tolist() == list(sel.grid_hw)
            torch.testing.assert_close(
                ours["pixel_values"][i, :n], ref["pixel_values"][0, :n], rtol=0, atol=1e-6
            )
            assert int(ref["pixel_attention_mask"].sum()) == n == int(ours["pixel_attention_mask"][i].sum())
            assert ours["pixel_attention_mask"][i, :n].all() and ref["pixel_attention_mask"][0, :n].all()
    assert ours["pixel_attention_mask"].sum(1).tolist() == [15, 8] and not ours["pixel_values"][1, 8:].any()


def test_frames_are_split_and_sparse_media_rejected(tower, clips):
    layout = frame_layout(media_of([clips[3]]).positions, media_of([clips[3]]).cu_seqlens)
    assert layout.num_frames == 3 and layout.spatial_shapes.tolist() == [[5, 5]] * 3
    with pytest.raises(ValueError, match="needs dense frames"):
        tower(media_of([sparse_sel(patch=P)]))
    with pytest.raises(ValueError, match="patch size"):
        tower(media_of([dense_sel(1, 2, 2, patch=14)]))


# ----------------------------------------------------------------- forward


def test_token_counts_image_and_odd_clips(tower, clips):
    image = image_sel(48, 80)[0]
    for sel in (image, clips[3], clips[5]):
        with torch.no_grad():
            out = tower(media_of([sel]))
        assert out.features.shape == (TokenCounter(1)(sel), tower.hidden_size)
        assert out.counts == [len(sel)] and torch.isfinite(out.features).all()
    assert len(clips[3]) == 3 * 25 and len(clips[5]) == 5 * 25
    assert tower.spec == spec_siglip2(DEBUG) == tower_spec(DEBUG)
    assert (tower.spec.patch_size, tower.spec.frames_per_token, tower.spec.merge) == (16, 1, 1)


def test_lmm_counts_with_projector_merge2(tokenizer, clips):
    torch.manual_seed(1)
    cfg = ModelConfig(tower=DEBUG, projector=ProjectorConfig(merge=2), llm=LLMConfig(from_scratch={}))
    model = build_model(cfg, tokenizer).eval()
    image = image_sel(48, 80)[0]
    sels = [image, clips[3], clips[5]]
    expected = [TokenCounter(2)(s) for s in sels]
    assert expected == [2 * 3, 3 * 9, 5 * 9] and model.token_counter() == TokenCounter(2)
    with torch.no_grad():
        visual = model.encode_media(media_of(sels, model.token_counter()))
    assert visual.shape == (sum(expected), model.llm.config.hidden_size)


def test_packing_invariance_and_patch_order(tower, clips):
    image = image_sel(48, 80, 3)[0]
    with torch.no_grad():
        both = tower(media_of([image, clips[3]])).features
        alone = torch.cat([tower(media_of([image])).features, tower(media_of([clips[3]])).features])
        torch.testing.assert_close(both, alone, atol=1e-5, rtol=1e-5)
        # the features follow the patches' own order (the layout does not rely on a sort)
        perm = torch.randperm(len(image), generator=torch.Generator().manual_seed(0))
        media = media_of([image])
        media.pixels, media.positions = media.pixels[perm], media.positions[perm]
        torch.testing.assert_close(tower(media).features, alone[: len(image)][perm], atol=1e-5, rtol=1e-5)


def test_output_layer_and_unused_parameters(tower):
    media = media_of([image_sel(48, 80)[0]])
    inputs = naflex_inputs(media)
    layout = frame_layout(media.positions, media.cu_seqlens)
    with torch.no_grad():
        ref = tower.vision_model(**inputs, output_hidden_states=True)
        last = Siglip2Tower(tower.vision_model, -1)
        torch.testing.assert_close(tower(media).features, ref.hidden_states[-2][layout.frame, layout.slot])
        torch.testing.assert_close(last(media).features, ref.last_hidden_state[layout.frame, layout.slot])
    unused = set(tower.unused_parameter_names())  # output_layer = -2 of 2 blocks: block 1 and the post-norm
    assert "vision_model.head.probe" in unused and "vision_model.post_layernorm.weight" in unused
    assert "vision_model.encoder.layers.1.mlp.fc1.weight" in unused
    assert not any(n.startswith("vision_model.encoder.layers.0.") for n in unused)
    last_unused = set(last.unused_parameter_names())
    assert all(n.startswith("vision_model.head.") for n in last_unused) and last_unused
    with pytest.raises(ValueError, match=r"output_layer must be in \[-3, 2\]"):
        Siglip2Tower(tower.vision_model, 3)
    tower.vision_model.requires_grad_(True)
    Siglip2Tower(tower.vision_model, -1).requires_grad_(True)  # re-freezes only the head
    assert (
        not tower.vision_model.head.probe.requires_grad
        and tower.vision_model.post_layernorm.weight.requires_grad
    )


def test_activation_checkpointing_same_grads():
    media = media_of([image_sel(48, 80)[0], dense_sel(2, 3, 3, 4, patch=P)])
    grads = []
    for enabled in (False, True):
        torch.manual_seed(4)
        t = build_siglip2(DEBUG).train()
        t.set_activation_checkpointing(enabled)
        t(media).features.square().sum().backward()
        grads.append(t.vision_model.encoder.layers[0].mlp.fc1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------- checkpoints


def _tiny_full_model(seed: int = 0):
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(seed)
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return Siglip2Model(Siglip2Config(text_config=text, vision_config=PRESETS["debug"])).eval()


def test_save_load_bit_exact(tower, tmp_path):
    tower.save_pretrained(tmp_path / "t")
    assert json.loads((tmp_path / "t" / "config.json").read_text())["model_type"] == "siglip2_vision_model"
    loaded = build_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "t"))).eval()
    a, b = tower.vision_model.state_dict(), loaded.vision_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    media = media_of([image_sel(48, 80)[0], dense_sel(3, 2, 3, 5, patch=P)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(media).features, tower(media).features, rtol=0, atol=0)
    assert loaded.unused_parameter_names() == tower.unused_parameter_names()


def test_full_siglip2_checkpoint_loads_its_vision_part(tmp_path):
    full = _tiny_full_model()
    full.save_pretrained(tmp_path / "full")
    tower = build_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "full"), output_layer=-1)).eval()
    ref = full.vision_model.state_dict()
    got = tower.vision_model.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    media = media_of([image_sel(48, 80)[0]])
    layout = frame_layout(media.positions, media.cu_seqlens)
    with torch.no_grad():
        expected = full.vision_model(**naflex_inputs(media)).last_hidden_state[layout.frame, layout.slot]
        torch.testing.assert_close(tower(media).features, expected, rtol=0, atol=0)
    assert spec_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "full"))).patch_size == 16


def _edit_weights(src, dst, edit) -> None:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))


def test_missing_or_extra_keys_fail_loudly(tower, tmp_path):
    tower.save_pretrained(tmp_path / "ok")
    _edit_weights(tmp_path / "ok", tmp_path / "missing", lambda s: s.pop("post_layernorm.weight"))
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['post_layernorm.weight'\]"):
        build_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "missing")))
    _edit_weights(tmp_path / "ok", tmp_path / "extra", lambda s: s.update(extra_bias=torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): \['extra_bias'\]"):
        build_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "extra")))
    _tiny_full_model().save_pretrained(tmp_path / "full")
    key = "vision_model.encoder.layers.1.mlp.fc2.bias"
    _edit_weights(tmp_path / "full", tmp_path / "full_missing", lambda s: s.pop(key))
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['encoder.layers.1.mlp.fc2.bias'\]"):
        build_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "full_missing")))
    wide = TowerConfig(name="siglip2", path=str(tmp_path / "ok"), overrides={"intermediate_size": 48})
    with pytest.raises(ValueError, match="shape mismatches"):
        build_siglip2(wide)


# ----------------------------------------------------------------- config checks


def test_validate_and_spec(tmp_path):
    validate_siglip2(DEBUG)
    validate_siglip2(
        TowerConfig(
            name="siglip2", size="so400m", output_layer=-28, overrides={"attn_implementation": "eager"}
        )
    )
    assert spec_siglip2(TowerConfig(name="siglip2", size="so400m")).patch_size == 16
    assert (
        spec_siglip2(TowerConfig(name="siglip2", size="debug", overrides={"patch_size": 14})).patch_size == 14
    )
    bad = {
        "unknown Siglip2VisionConfig override": TowerConfig(name="siglip2", overrides={"hidden_sizee": 8}),
        "unknown SigLIP2 size 'huge'": TowerConfig(name="siglip2", size="huge"),
        r"output_layer must be in \[-3, 2\]": TowerConfig(name="siglip2", output_layer=-4),
        "flash-attention": TowerConfig(
            name="siglip2", overrides={"attn_implementation": "flash_attention_2"}
        ),
        "hidden_size": TowerConfig(name="siglip2", overrides={"hidden_size": "wide"}),
    }
    for message, cfg in bad.items():
        with pytest.raises(ConfigError, match=message):
            cfg.validate()
    with pytest.raises(ConfigError, match="unknown SigLIP2 size"):
        ModelConfig.from_dict({"tower": {"name": "siglip2", "size": "huge"}})
    _tiny_full_model().save_pretrained(tmp_path / "full")
    with pytest.raises(ConfigError, match=r"output_layer must be in \[-3, 2\]"):
        validate_siglip2(TowerConfig(name="siglip2", path=str(tmp_path / "full"), output_layer=5))


# ----------------------------------------------------------------- LMM training step


def test_lmm_training_step_with_siglip2(tokenizer):
    torch.manual_seed(2)
    cfg = ModelConfig(tower=DEBUG, projector=ProjectorConfig(merge=2), llm=LLMConfig(from_scratch={}))
    model = build_model(cfg, tokenizer).train()
    counter = model.token_counter()
    s0 = sample("a", [dense_sel(3, 3, 3, 1, patch=P), dense_sel(1, 3, 5, 2, patch=P)], ["video", "image"])
    s1 = sample("b", [dense_sel(1, 4, 4, 3, patch=P)], ["image"], "What is shown?", "A cat.")
    items = [make_item(s, tokenizer, counter) for s in (s0, s1)]
    assert all(isinstance(it, LMMItem) for it in items), items
    batch = batch_of(items, tokenizer)
    assert batch.media.num_tokens.tolist() == [3 * 4, 2 * 3, 4]
    model.zero_grad(set_to_none=True)
    out = model(batch)
    assert torch.isfinite(out.loss) and out.num_targets > 0
    out.loss.backward()
    tower = model.vision_tower
    for module in (
        tower.vision_model.embeddings,
        tower.vision_model.encoder.layers[0],
        model.projector,
        model.llm,
    ):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    params = dict(tower.named_parameters())
    for name in tower.unused_parameter_names():
        assert not params[name].requires_grad and params[name].grad is None


def test_lmm_text_only_batch_and_checkpoint_round_trip(tokenizer, tmp_path):
    from llava_ov.model import LlavaOVModel

    torch.manual_seed(3)
    cfg = ModelConfig(tower=DEBUG, projector=ProjectorConfig(merge=2), llm=LLMConfig(from_scratch={}))
    model = build_model(cfg, tokenizer).eval()
    text_only = make_item(sample("t", [], [], "How many apples?", "There are 3 apples."), tokenizer)
    out = model(batch_of([text_only], tokenizer))  # the dummy pass runs the tower on a 2 × 2 blank image
    out.loss.backward()
    patch_grad = model.vision_tower.vision_model.embeddings.patch_embedding.weight.grad
    assert torch.isfinite(out.loss) and patch_grad is not None and not patch_grad.any()
    item = make_item(
        sample("a", [dense_sel(2, 2, 3, 1, patch=P)], ["video"]), tokenizer, model.token_counter()
    )
    batch = batch_of([item], tokenizer)
    loaded = LlavaOVModel.from_pretrained(model.save_pretrained(tmp_path / "ckpt")).eval()
    assert isinstance(loaded.vision_tower, Siglip2Tower) and loaded.config.tower.size == "debug"
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(batch, return_logits=True).logits, model(batch, return_logits=True).logits, rtol=0, atol=0
        )
