"""LMM forward: visual-token placement, loss, gradients, packed == padded, 2×2 merge, text-only batches."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from lmm_model_support import batch_of, dense_sel, mixed_items, sample, sparse_sel, tiny_model

from llava_ov.data.dataset import LMMItem, Skipped, make_item
from llava_ov.model import TokenCounter, TowerConfig, build_tower, merge_plan
from llava_ov.model.merge import apply_merge


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def model2(tokenizer):
    return tiny_model(tokenizer, merge=2, seed=1)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_forward_packed_loss_and_grads(model, tokenizer):
    items = mixed_items(tokenizer, model.token_counter())
    batch = batch_of(items, tokenizer)
    assert batch.media.num_tokens.tolist() == [8, 8]
    model.zero_grad(set_to_none=True)
    out = model(batch, return_logits=True)
    labels = batch.text.labels
    assert out.num_targets == int((labels[:, 1:] != -100).sum()) > 0
    assert out.logits.shape == (1, labels.shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    tower = model.vision_tower.encoder
    assert _grad_norm(tower.encoder.layers[0]) > 0 and _grad_norm(tower.embeddings) > 0
    assert _grad_norm(model.projector) > 0
    assert _grad_norm(model.llm) > 0 and model.llm.get_input_embeddings().weight.grad.abs().sum() > 0
    # blocks after output_layer=-2, the post-norm and the pooling head never take part: frozen, no grads
    unused = dict(model.vision_tower.named_parameters())
    for name in model.vision_tower.unused_parameter_names():
        assert not unused[name].requires_grad and unused[name].grad is None
    assert "encoder.encoder.layers.2.mlp.fc1.weight" in model.vision_tower.unused_parameter_names()
    model.requires_grad_(True)  # the tower's unused parameters stay frozen
    assert not any(unused[n].requires_grad for n in model.vision_tower.unused_parameter_names())


def test_visual_tokens_land_on_the_pad_positions(model, tokenizer):
    batch = batch_of(mixed_items(tokenizer, model.token_counter()), tokenizer)
    with torch.no_grad():
        embeds = model.embed(batch.text.input_ids, batch.media)
        visual = model.encode_media(batch.media)
    spans = batch.text.media_spans
    assert visual.shape == (16, model.llm.config.hidden_size)
    torch.testing.assert_close(embeds[0, spans[0][0] : spans[0][1]], visual[:8])
    torch.testing.assert_close(embeds[0, spans[1][0] : spans[1][1]], visual[8:])
    text_emb = model.llm.get_input_embeddings()(batch.text.input_ids[:, : spans[0][0]])
    torch.testing.assert_close(embeds[:, : spans[0][0]], text_emb)


def test_placeholder_count_mismatch_raises(model, tokenizer):
    batch = batch_of(mixed_items(tokenizer, model.token_counter()), tokenizer)
    start = batch.text.media_spans[0][0]
    batch.text.input_ids[0, start] = tokenizer.convert_tokens_to_ids("<|im_start|>")
    with pytest.raises(ValueError, match="input_ids hold 15 media pad tokens but the media give 16"):
        model(batch)
    # items tokenized for another merge factor: the per-item counts disagree
    items = mixed_items(tokenizer, TokenCounter(2))
    with pytest.raises(ValueError, match=r"visual tokens per media item \[8, 8\] .* reserved \[2, 2\]"):
        model(batch_of(items, tokenizer))
    # pads in the text but no media at all
    bare = batch_of(items, tokenizer)
    bare.media = batch_of(items[1:], tokenizer).media
    with pytest.raises(ValueError, match="4 media pad tokens but the batch has no media"):
        model(bare)


def test_packed_equals_padded(model, tokenizer):
    items = mixed_items(tokenizer, model.token_counter())
    packed, padded = batch_of(items, tokenizer), batch_of(items, tokenizer, padded=True)
    with torch.no_grad():
        a, b = model(packed, return_logits=True), model(padded, return_logits=True)
    assert a.num_targets == b.num_targets
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)
    n0 = len(items[0])
    torch.testing.assert_close(a.logits[0, :n0], b.logits[0, :n0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.logits[0, n0:], b.logits[1, : len(items[1])], atol=1e-4, rtol=1e-4)


def test_text_only_batch_touches_tower_with_zero_grads(model, tokenizer):
    items = mixed_items(tokenizer, model.token_counter())[1:]
    batch = batch_of(items, tokenizer)
    assert batch.media.num_media == 0
    model.zero_grad(set_to_none=True)
    out = model(batch, return_logits=True)
    out.loss.backward()
    proj_grads = [p.grad for p in model.projector.parameters()]
    assert all(g is not None and not g.any() for g in proj_grads)
    assert model.vision_tower.encoder.embeddings.patch_embedding.weight.grad is not None
    assert _grad_norm(model.llm) > 0
    model.zero_grad(set_to_none=True)
    model.text_only_dummy_pass = False
    try:
        out2 = model(batch, return_logits=True)
        out2.loss.backward()
        assert all(p.grad is None for p in model.projector.parameters())
    finally:
        model.text_only_dummy_pass = True
    torch.testing.assert_close(out.logits, out2.logits)


def test_merge2_counts_shapes_and_grouping(model2, tokenizer):
    image, video = dense_sel(1, 4, 6, 3), dense_sel(2, 3, 3, 4)  # 3 × 3 frames: odd edge, zero-filled
    counter = model2.token_counter()
    assert counter(image) == 6 and counter(video) == 8
    assert model2.projector.linear_1.in_features == 4 * model2.vision_tower.hidden_size
    item = make_item(sample("m", [image, video], ["image", "video"]), tokenizer, counter)
    assert isinstance(item, LMMItem)
    batch = batch_of([item], tokenizer)
    with torch.no_grad():
        visual = model2.encode_media(batch.media)
        out = model2(batch)
    assert visual.shape == (14, model2.llm.config.hidden_size) and torch.isfinite(out.loss)
    # group 0 of the image = the features of patches (0,0), (0,1), (1,0), (1,1), in that slot order
    feats = torch.randn(batch.media.num_patches, 5)
    plan = merge_plan(batch.media.positions, batch.media.cu_seqlens)
    assert plan.counts == [6, 8]
    merged = apply_merge(feats, plan)
    torch.testing.assert_close(merged[0], torch.cat([feats[0], feats[1], feats[6], feats[7]]))
    # the video's first frame, last group (h=2, w=2): one real patch (index 24 + 8) then zeros
    torch.testing.assert_close(merged[6 + 3], torch.cat([feats[24 + 8], torch.zeros(15)]))


def test_merge2_rejects_sparse_codec_selection(model2, tokenizer):
    sel = sparse_sel()
    with pytest.raises(ValueError, match="merge=2 needs dense media"):
        TokenCounter(2)(sel)
    skipped = make_item(sample("s", [sel], ["video"]), tokenizer, TokenCounter(2))
    assert isinstance(skipped, Skipped) and "dense media" in skipped.detail
    item = make_item(sample("s", [sel], ["video"]), tokenizer)  # one token per patch
    with pytest.raises(ValueError, match="merge=2 needs dense media"):
        model2(batch_of([item], tokenizer))


def test_token_counter_pickles():
    counter = TokenCounter(2)
    clone = pickle.loads(pickle.dumps(counter))
    assert clone == counter and clone(dense_sel(1, 4, 4)) == 4
    assert len(pickle.dumps(counter)) < 200 and TokenCounter()(sparse_sel()) == 7


def test_activation_checkpointing_same_loss_and_grads(tokenizer):
    items = mixed_items(tokenizer, TokenCounter(1))
    grads = []
    for ckpt in (False, True):
        m = tiny_model(tokenizer, seed=3, activation_checkpointing=ckpt).train()
        flag = getattr(m.llm, "is_activation_checkpointing", None)
        assert (m.llm.is_gradient_checkpointing if flag is None else flag) == ckpt
        assert m.vision_tower.encoder.encoder.activation_checkpointing == ckpt
        out = m(batch_of(items, tokenizer))
        out.loss.backward()
        grads.append((out.loss.detach(), m.projector.linear_1.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-4)


def test_tower_registry():
    from llava_ov.model import TOWERS

    assert set(TOWERS) == {"ov_encoder", "siglip2", "qwen3_vit"}
    with pytest.raises(ValueError, match="unknown vision tower"):
        build_tower(dataclasses.replace(TowerConfig(), name="nope"))
