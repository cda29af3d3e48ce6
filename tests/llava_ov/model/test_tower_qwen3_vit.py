"""Qwen3-VL vision tower (transformers' Qwen3VLVisionModel): inputs, token counts, packing, loading, config
checks and one LMM training step, all on the tiny ``debug`` preset (random weights made here)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lmm_model_support import batch_of, dense_sel, sample
from PIL import Image
from safetensors.torch import save_file

from encoder.codec import CodecConfig, PatchSelection
from encoder.codec.pipeline import patchify_image
from encoder.typed_config import ConfigError
from llava_ov.data.dataset import LMMItem, MediaBatch, make_item
from llava_ov.model import TokenCounter, build_model
from llava_ov.model.config import LLMConfig, ModelConfig, ProjectorConfig, TowerConfig
from llava_ov.model.towers import build_tower, tower_spec
from llava_ov.model.towers.qwen3_vit import (
    PRESETS,
    Qwen3ViTTower,
    build_inputs,
    build_qwen3_vit,
    spec_qwen3_vit,
    validate_qwen3_vit,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[3]
COUNTER = TokenCounter(1, 2, 2)


def debug_cfg(**kw) -> TowerConfig:
    return TowerConfig(name="qwen3_vit", size="debug", output_layer=-1, **kw)


@pytest.fixture(scope="module")
def tower() -> Qwen3ViTTower:
    torch.manual_seed(0)
    return build_qwen3_vit(debug_cfg()).eval()


def media_of(sels: list[PatchSelection]) -> MediaBatch:
    """The packed media of ``sels`` (num_tokens = TokenCounter's count; 0 for media it refuses)."""

    def count(s: PatchSelection) -> int:
        try:
            return COUNTER(s)
        except ValueError:
            return 0

    lengths = [len(s) for s in sels]
    return MediaBatch(
        pixels=torch.from_numpy(np.concatenate([s.pixels for s in sels])),
        positions=torch.from_numpy(np.concatenate([s.positions for s in sels]).astype(np.int32)),
        cu_seqlens=torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32),
        num_tokens=torch.tensor([count(s) for s in sels], dtype=torch.int32),
        grid_hw=torch.tensor([s.grid_hw for s in sels], dtype=torch.int32),
        kinds=["image" if s.meta.get("mode") == "image" else "video" for s in sels],
        patch_size=16,
    )


def clip(frames: int, gh: int, gw: int, seed: int = 0) -> PatchSelection:
    return dense_sel(frames, gh, gw, seed, patch=16)


def pil_image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def hf_image_processor():
    try:  # transformers 5.x: the PIL backend (no torchvision needed)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as P
    except ImportError:  # 4.57: the "slow" numpy/PIL processor
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor as P
    return P(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)


# ----------------------------------------------------------------------------- version


def test_transformers_satisfies_the_pin_and_has_qwen3_vl():
    import transformers
    from packaging.requirements import Requirement
    from packaging.version import Version

    pin = re.search(r'^\s*"(transformers[^"]*)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert pin, "no transformers requirement in pyproject.toml"
    req = Requirement(pin.group(1))
    assert req.specifier.contains(transformers.__version__), (req, transformers.__version__)
    assert not req.specifier.contains("4.56.2"), f"{req} admits a transformers without Qwen3-VL"
    assert not req.specifier.contains("6.0.0"), f"{req} admits the next major version (layouts change)"
    assert Version(transformers.__version__) >= Version("4.57")
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    assert Qwen3VLVisionModel.__name__ == "Qwen3VLVisionModel"


# ----------------------------------------------------------------------------- inputs


def test_rows_match_the_hf_image_processor():
    img = pil_image(64, 96)  # multiples of 32: the processor does not resize
    sel, _ = patchify_image(img, CodecConfig(mode="image", patch_size=16))
    inputs = build_inputs(media_of([sel]))
    ref = hf_image_processor()(images=[img], return_tensors="pt")
    assert inputs.grid_thw.tolist() == ref["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert inputs.rows.shape == ref["pixel_values"].shape == (24, 3 * 2 * 16 * 16)
    torch.testing.assert_close(inputs.rows, ref["pixel_values"].float(), atol=1e-6, rtol=0)


def test_clip_rows_hold_consecutive_frames_in_the_temporal_slot():
    """A 2-frame clip's rows: temporal slot k = the processor's rows of frame k
    (video layout C, T, ph, pw)."""
    frames = [pil_image(64, 64, seed) for seed in (1, 2)]  # ≥ the processor's min_pixels: no resize
    sels = [patchify_image(f, CodecConfig(mode="image", patch_size=16))[0] for f in frames]
    pos = np.concatenate([s.positions + np.array([t, 0, 0], np.int32) for s, t in zip(sels, (0, 63))])
    sel = PatchSelection(
        pos,
        np.concatenate([s.pixels for s in sels]),
        np.ones(len(pos)),
        np.arange(2),
        np.array([0, 63], np.int32),
        16,
        (4, 4),
        {"mode": "frames"},
    )
    rows = build_inputs(media_of([sel])).rows.view(-1, 3, 2, 16, 16)
    ref = hf_image_processor()(images=frames, return_tensors="pt")["pixel_values"].view(2, -1, 3, 2, 16, 16)
    for k in range(2):
        torch.testing.assert_close(rows[:, :, k], ref[k, :, :, 0], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("frames,gh,gw", [(1, 4, 4), (1, 4, 6), (3, 4, 4), (5, 3, 5)])
def test_token_count_positions_and_parity_with_the_hf_model(tower, frames, gh, gw):
    sel = clip(frames, gh, gw, seed=frames + gh)
    media = media_of([sel])
    with torch.no_grad():
        out = tower(media)
        inputs = tower.prepare(media)
        direct = tower.model(hidden_states=inputs.rows, grid_thw=inputs.grid_thw).pooler_output
    n = COUNTER(sel)
    assert n == -(-frames // 2) * -(-gh // 2) * -(-gw // 2)
    assert out.counts == [n] and out.features.shape == (n, tower.hidden_size) == (n, 48)
    assert torch.equal(out.features, direct)
    t_first = np.unique(sel.positions[:, 0])[::2]  # each tubelet's first frame
    expected = [[int(t), i, j] for t in t_first for i in range(-(-gh // 2)) for j in range(-(-gw // 2))]
    assert out.positions.tolist() == expected


def test_image_tokens_equal_the_hf_processor_and_model_end_to_end(tower):
    img = pil_image(64, 96, seed=3)
    sel, _ = patchify_image(img, CodecConfig(mode="image", patch_size=16))
    ref = hf_image_processor()(images=[img], return_tensors="pt")
    with torch.no_grad():
        out = tower(media_of([sel]))
        direct = tower.model(hidden_states=ref["pixel_values"], grid_thw=ref["image_grid_thw"]).pooler_output
    torch.testing.assert_close(out.features, direct, atol=1e-5, rtol=1e-5)


def test_odd_frames_and_grid_are_padded_by_repeating_the_last_frame_row_and_column(tower):
    sel = clip(3, 3, 5, seed=7)  # → 4 frames of 4 × 6 with the last frame / row / column repeated
    grid = sel.pixels.reshape(3, 3, 5, 3, 16, 16)
    padded = grid[[0, 1, 2, 2]][:, [0, 1, 2, 2]][:, :, [0, 1, 2, 3, 4, 4]]
    t = np.array([0, 31, 62, 63])  # any increasing t: only the order matters inside the tower
    tt, hh, ww = np.meshgrid(t, np.arange(4), np.arange(6), indexing="ij")
    pos = np.stack([tt.ravel(), hh.ravel(), ww.ravel()], 1).astype(np.int32)
    explicit = PatchSelection(
        pos, padded.reshape(-1, 3, 16, 16), np.ones(len(pos)), np.arange(4), t, 16, (4, 6), {"mode": "frames"}
    )
    with torch.no_grad():
        a, b = tower(media_of([sel])), tower(media_of([explicit]))
    assert a.counts == b.counts == [12]
    assert torch.equal(a.features, b.features)


def test_unsorted_patches_give_the_same_tokens(tower):
    sel = clip(2, 2, 4, seed=4)
    perm = np.random.default_rng(0).permutation(len(sel))
    shuffled = dataclasses.replace(sel, positions=sel.positions[perm], pixels=sel.pixels[perm])
    with torch.no_grad():
        assert torch.equal(tower(media_of([sel])).features, tower(media_of([shuffled])).features)


def test_sparse_or_mismatched_media_are_refused(tower):
    sel = clip(2, 4, 4)
    sparse = dataclasses.replace(
        sel,
        positions=sel.positions[:-3],
        pixels=sel.pixels[:-3],
        scores=sel.scores[:-3],
        meta={"mode": "codec"},
    )
    with pytest.raises(ValueError, match="media item 0: .*dense frames of one grid"):
        tower(media_of([sparse]))
    dup = dataclasses.replace(sel, positions=np.concatenate([sel.positions[:-1], sel.positions[:1]]))
    with pytest.raises(ValueError, match="duplicate patch positions"):
        tower(media_of([dup]))
    small = dense_sel(1, 2, 2, patch=14)
    media = media_of([small])
    media.patch_size = 14
    with pytest.raises(ValueError, match="patch size 14"):
        tower(media)


def test_packing_two_media_equals_each_alone(tower):
    a, b = clip(1, 3, 4, seed=1), clip(5, 4, 2, seed=2)
    with torch.no_grad():
        both = tower(media_of([a, b]))
        alone = [tower(media_of([s])) for s in (a, b)]
    assert both.counts == [alone[0].counts[0], alone[1].counts[0]] == [COUNTER(a), COUNTER(b)]
    torch.testing.assert_close(both.features, torch.cat([o.features for o in alone]), atol=1e-5, rtol=0)
    assert torch.equal(both.positions, torch.cat([o.positions for o in alone]))
    assert both.cu_seqlens.tolist() == [0, COUNTER(a), COUNTER(a) + COUNTER(b)]


def test_activation_checkpointing_keeps_outputs_and_grads():
    torch.manual_seed(1)
    tw = build_qwen3_vit(debug_cfg()).train()
    media = media_of([clip(3, 2, 2, seed=5)])

    def run():
        tw.zero_grad(set_to_none=True)
        out = tw(media).features
        out.square().sum().backward()
        return out.detach(), tw.model.patch_embed.proj.weight.grad.clone()

    ref = run()
    tw.set_activation_checkpointing(True)
    assert all(b.gradient_checkpointing for b in tw.model.blocks)
    got = run()
    tw.set_activation_checkpointing(False)
    torch.testing.assert_close(got[0], ref[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], ref[1], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- checkpoints


def test_save_then_load_is_bit_exact(tower, tmp_path):
    tower.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen3_vl_vision"
    loaded = build_qwen3_vit(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1)).eval()
    ref, got = tower.model.state_dict(), loaded.model.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert (loaded.image_mean, loaded.image_std) == (tower.image_mean, tower.image_std)
    media = media_of([clip(3, 3, 3, seed=9)])
    with torch.no_grad():
        assert torch.equal(tower(media).features, loaded(media).features)
    assert spec_qwen3_vit(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1)) == tower.spec


def _full_checkpoint(directory: Path, edit=None, sharded: bool = True):
    """A Qwen3-VL-style full checkpoint: vision (with deepstack mergers) under ``model.visual.``, a tiny
    language model part, config.json with ``vision_config``. Returns the HF vision model."""
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    torch.manual_seed(3)
    vision_cfg = {**PRESETS["debug"], "deepstack_visual_indexes": [0, 1]}
    hf = Qwen3VLVisionModel(Qwen3VLVisionConfig(**vision_cfg)).eval()
    state = {f"model.visual.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    assert any(".deepstack_merger_list." in k for k in state)
    llm = {
        "model.language_model.embed_tokens.weight": torch.randn(10, 8),
        "model.language_model.norm.weight": torch.ones(8),
        "lm_head.weight": torch.randn(10, 8),
    }
    if edit is not None:
        edit(state)
    directory.mkdir(parents=True, exist_ok=True)
    if sharded:  # vision split over two shards with LLM tensors; a third, LLM-only shard is never opened
        names = sorted(state)
        shards = {
            "model-00001-of-00003.safetensors": {
                **{k: state[k] for k in names[::2]},
                "model.language_model.norm.weight": llm.pop("model.language_model.norm.weight"),
            },
            "model-00002-of-00003.safetensors": {k: state[k] for k in names[1::2]},
        }
        for file, tensors in shards.items():
            save_file(tensors, str(directory / file), metadata={"format": "pt"})
        (directory / "model-00003-of-00003.safetensors").write_bytes(b"not safetensors: must stay unread")
        weight_map = {k: f for f, ts in shards.items() for k in ts}
        weight_map.update({k: "model-00003-of-00003.safetensors" for k in llm})
        (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        save_file({**state, **llm}, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "qwen3_vl",
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "vision_config": {**vision_cfg, "model_type": "qwen3_vl", "hidden_act": "gelu_pytorch_tanh"},
        "text_config": {"model_type": "qwen3_vl_text", "hidden_size": 8, "vocab_size": 10},
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "patch_size": 16})
    )
    return hf


@pytest.mark.parametrize("sharded", [True, False])
def test_full_qwen3_vl_checkpoint_loads_its_vision_part(tmp_path, sharded):
    hf = _full_checkpoint(tmp_path, sharded=sharded)
    tw = build_tower(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1)).eval()
    assert isinstance(tw, Qwen3ViTTower) and len(tw.model.deepstack_merger_list) == 0
    ref = {k: v for k, v in hf.state_dict().items() if not k.startswith("deepstack_merger_list.")}
    got = tw.model.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    media = media_of([clip(2, 4, 4, seed=11)])
    with torch.no_grad():
        inputs = tw.prepare(media)
        direct = hf(hidden_states=inputs.rows, grid_thw=inputs.grid_thw).pooler_output
        assert torch.equal(tw(media).features, direct)  # deepstack never changes the main path
    assert tower_spec(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1)) == tw.spec


def test_missing_vision_key_fails_loudly(tmp_path):
    _full_checkpoint(tmp_path, edit=lambda s: s.pop("model.visual.merger.linear_fc2.bias"))
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['merger.linear_fc2.bias'\]"):
        build_qwen3_vit(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1))


def test_unexpected_vision_key_fails_loudly(tmp_path):
    _full_checkpoint(
        tmp_path, edit=lambda s: s.update({"model.visual.blocks.0.attn.extra": torch.zeros(2)}), sharded=False
    )
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): \['blocks.0.attn.extra'\]"):
        build_qwen3_vit(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1))


def test_a_config_that_does_not_fit_the_weights_fails_loudly(tower, tmp_path):
    tower.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unexpected keys.*blocks.1"):  # depth 1 model, 2 blocks saved
        build_qwen3_vit(
            TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1, overrides={"depth": 1})
        )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model"}))
    with pytest.raises(ValueError, match="neither a Qwen3-VL checkpoint"):
        build_qwen3_vit(TowerConfig(name="qwen3_vit", path=str(tmp_path), output_layer=-1))


# ----------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(output_layer=-2), "output_layer must be -1"),
        (dict(output_layer=-1, size="huge"), "unknown size 'huge'"),
        (dict(output_layer=-1, overrides={"nope": 1}), r"unknown override keys \['nope'\]"),
        (dict(output_layer=-1, overrides={"deepstack_visual_indexes": [0]}), "deepstack_visual_indexes"),
        (dict(output_layer=-1, overrides={"depth": "two"}), "depth"),
        (dict(output_layer=-1, overrides={"num_heads": 3}), "num_heads"),
        (dict(output_layer=-1, overrides={"image_std": [0.5, 0.5]}), "image_std"),
    ],
)
def test_validate_rejects_bad_settings(kw, match):
    cfg = TowerConfig(name="qwen3_vit", **{"size": "debug", **kw})
    with pytest.raises(ConfigError, match=match):
        validate_qwen3_vit(cfg)
    with pytest.raises(ConfigError, match=match):
        cfg.validate()  # through the registry


def test_validate_accepts_presets_and_real_keys():
    for size in PRESETS:
        validate_qwen3_vit(TowerConfig(name="qwen3_vit", size=size, output_layer=-1))
    validate_qwen3_vit(
        debug_cfg(overrides={"depth": 1, "attn_implementation": "eager", "image_mean": [0.4] * 3})
    )
    assert spec_qwen3_vit(TowerConfig(name="qwen3_vit", size="8b", output_layer=-1)) == spec_qwen3_vit(
        debug_cfg()
    )


def test_the_tower_section_and_overrides_set_options():
    cfg = TowerConfig(
        name="qwen3_vit",
        size="debug",
        output_layer=-1,
        qwen3_vit={"depth": 1, "image_mean": [0.4] * 3},
        overrides={"image_mean": [0.3] * 3},
    )
    tw = build_tower(cfg)
    assert len(tw.model.blocks) == 1 and tw.image_mean == (0.3, 0.3, 0.3)
    with pytest.raises(ConfigError, match=r"unknown override keys \['typo'\]"):
        TowerConfig(name="qwen3_vit", output_layer=-1, qwen3_vit={"typo": 1}).validate()


def test_model_config_rejects_projector_merge_2():
    cfg = ModelConfig(tower=debug_cfg(), projector=ProjectorConfig(merge=2), llm=LLMConfig(from_scratch={}))
    with pytest.raises(ValueError, match="merges patches itself"):
        cfg.validate()
    cfg.projector.merge = 1
    cfg.validate()
    assert cfg.token_counter() == COUNTER


# ----------------------------------------------------------------------------- LMM


def test_lmm_training_step_with_the_qwen3_tower(tokenizer):
    torch.manual_seed(0)
    cfg = ModelConfig(tower=debug_cfg(), projector=ProjectorConfig(merge=1), llm=LLMConfig(from_scratch={}))
    model = build_model(cfg, tokenizer)
    counter = model.token_counter()
    assert counter == cfg.token_counter() == COUNTER
    s0 = sample("a", [clip(3, 3, 5, seed=1), dense_sel(1, 2, 4, 2, patch=16)], ["video", "image"])
    s1 = sample("b", [clip(4, 2, 2, seed=3)], ["video"], "How many apples?", "There are 3 apples.")
    items = [make_item(s, tokenizer, counter) for s in (s0, s1)]
    assert all(isinstance(it, LMMItem) for it in items), items
    batch = batch_of(items, tokenizer)
    assert batch.media.num_tokens.tolist() == [12, 2, 2]
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(batch)
    assert torch.isfinite(out.loss) and out.num_targets > 0
    out.loss.backward()
    groups = {"tower": model.vision_tower, "projector": model.projector, "llm": model.llm}
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    tower = model.vision_tower.model
    for part in (tower.patch_embed, tower.blocks[0], tower.merger):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # a text-only batch runs the dummy 2 × 2 image through the tower (one token) without error
    text_only = make_item(sample("c", [], []), tokenizer, counter)
    assert torch.isfinite(model(batch_of([text_only], tokenizer)).loss)


def test_lmm_export_round_trip_keeps_the_tower(tokenizer, tmp_path):
    from llava_ov.model import LlavaOVModel

    torch.manual_seed(2)
    cfg = ModelConfig(tower=debug_cfg(), projector=ProjectorConfig(merge=1), llm=LLMConfig(from_scratch={}))
    model = build_model(cfg, tokenizer)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "vision_tower" / "config.json").is_file()
    loaded = LlavaOVModel.from_pretrained(tmp_path)
    assert isinstance(loaded.vision_tower, Qwen3ViTTower)
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
