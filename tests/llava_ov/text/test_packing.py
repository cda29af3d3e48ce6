from __future__ import annotations

import pytest
import torch

from llava_ov.text.conversation import IGNORE_INDEX, TokenizedSample, tokenize_conversation
from llava_ov.text.packing import (
    block_causal_mask,
    collate_packed,
    collate_padded,
    model_inputs,
    pack_samples,
    plan_packs,
)

CONVERSATIONS = [
    ([{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red cat."}], [5]),
    (
        [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": "How many apples are on the table?"},
            {"from": "gpt", "value": "There are 3 apples."},
            {"from": "human", "value": "<video>\nAnd the dog?"},
            {"from": "gpt", "value": "The dog runs across the park and jumps over a bench."},
        ],
        [4],
    ),
    ([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], []),
]


@pytest.fixture(scope="module")
def samples(tokenizer) -> list[TokenizedSample]:
    return [tokenize_conversation(c, tokenizer, num_media_tokens=n) for c, n in CONVERSATIONS]


def _tiny_qwen3(vocab_size: int, attn: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    model = Qwen3ForCausalLM(config).float()
    model.set_attn_implementation(attn)
    return model.train()  # dropout is 0 in Qwen3; train mode exercises the training path


def _forward_backward(model, kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return out.logits.detach(), out.loss.detach(), grads


def _token_mean_loss(logits_per_sample, samples):
    """Reference: mean CE over every assistant target token of every sample, computed by hand."""
    losses = []
    for logits, s in zip(logits_per_sample, samples):
        losses.append(torch.nn.functional.cross_entropy(logits[:-1], s.labels[1:], reduction="none"))
        losses[-1] = losses[-1][s.labels[1:] != IGNORE_INDEX]
    return torch.cat(losses).mean()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked(tokenizer, samples, attn):
    model = _tiny_qwen3(len(tokenizer), attn)
    packed = collate_packed(samples)
    padded = collate_padded(samples, tokenizer.pad_token_id)
    p_logits, p_loss, p_grads = _forward_backward(model, model_inputs(packed, attn))
    u_logits, u_loss, u_grads = _forward_backward(model, model_inputs(padded, attn))

    bounds = packed.cu_seqlens.tolist()
    per_sample = []
    for i, s in enumerate(samples):
        got = p_logits[0, bounds[i] : bounds[i + 1]]
        torch.testing.assert_close(got, u_logits[i, : len(s)], atol=1e-5, rtol=1e-5)
        per_sample.append(got)
    torch.testing.assert_close(p_loss, u_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(p_loss, _token_mean_loss(per_sample, samples), atol=1e-6, rtol=1e-5)
    for name, grad in p_grads.items():
        torch.testing.assert_close(grad, u_grads[name], atol=1e-6, rtol=1e-4, msg=name)

    # transformers' implicit packed mask == our explicit block-diagonal causal mask
    explicit = dict(model_inputs(packed, attn), attention_mask=block_causal_mask(packed.cu_seqlens))
    with torch.no_grad():
        torch.testing.assert_close(model(**explicit).logits, p_logits, atol=1e-5, rtol=1e-5)


def test_cache_would_break_packing(tokenizer, samples):
    """Why model_inputs sets use_cache=False: with a cache, transformers skips packed-mask detection."""
    model = _tiny_qwen3(len(tokenizer), "sdpa").eval()
    packed = collate_packed(samples)
    kwargs = model_inputs(packed)
    with torch.no_grad():
        good = model(**kwargs).logits
        leaky = model(**dict(kwargs, use_cache=True)).logits
    n0 = len(samples[0])
    torch.testing.assert_close(good[0, :n0], leaky[0, :n0])  # first sample sees nothing else anyway
    assert not torch.allclose(good[0, n0:], leaky[0, n0:], atol=1e-3)


def test_positions_and_boundary_labels(samples):
    packed = collate_packed(samples)
    lengths = [len(s) for s in samples]
    assert packed.input_ids.shape == packed.labels.shape == packed.position_ids.shape == (1, sum(lengths))
    assert packed.cu_seqlens.dtype == torch.int32
    assert packed.cu_seqlens.tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert packed.max_seqlen == max(lengths) and packed.num_samples == 3
    expected_pos = torch.cat([torch.arange(n) for n in lengths])
    assert packed.position_ids[0].equal(expected_pos)
    # causal-LM loss target of token t is labels[t + 1]: every sample start must be -100
    for start in packed.cu_seqlens[:-1].tolist():
        assert packed.labels[0, start] == IGNORE_INDEX
    # even when a sample's first label is a target, packing masks it
    odd = TokenizedSample(torch.tensor([7, 8, 9]), torch.tensor([7, 8, 9]))
    both = collate_packed([samples[2], odd])
    assert both.labels[0, len(samples[2])] == IGNORE_INDEX
    assert both.labels[0, len(samples[2]) + 1 :].tolist() == [8, 9]
    # everything else is unchanged, and media spans move with their sample
    assert packed.input_ids[0].equal(torch.cat([s.input_ids for s in samples]))
    off = lengths[0]
    assert packed.media_spans == [
        samples[0].media_spans[0],
        (off + samples[1].media_spans[0][0], off + samples[1].media_spans[0][1], "video"),
    ]


def test_padded_collation(tokenizer, samples):
    batch = collate_padded(samples, tokenizer.pad_token_id, pad_to_multiple_of=8)
    width = batch.input_ids.shape[1]
    assert width % 8 == 0 and width >= max(len(s) for s in samples)
    assert batch.attention_mask.sum(1).tolist() == [len(s) for s in samples]
    assert (batch.labels[batch.attention_mask == 0] == IGNORE_INDEX).all()
    assert (batch.input_ids[batch.attention_mask == 0] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("strategy", ["ffd", "sequential"])
def test_plan_respects_max_tokens(strategy):
    lengths = [5, 9, 3, 7, 2, 8, 1, 6, 4, 10]
    plan = plan_packs(lengths, max_tokens=12, strategy=strategy)
    flat = sorted(i for b in plan.bins for i in b)
    assert flat == list(range(len(lengths))) and plan.dropped == []
    assert all(sum(lengths[i] for i in b) <= 12 for b in plan.bins)
    if strategy == "sequential":
        assert [i for b in plan.bins for i in b] == list(range(len(lengths)))
    else:
        assert len(plan.bins) == 5  # total 55 → at least 5 bins of 12; FFD reaches it


def test_oversize_samples(samples):
    with pytest.raises(ValueError, match="longer than max_tokens"):
        plan_packs([3, 20, 4], max_tokens=10)
    plan = plan_packs([3, 20, 4], max_tokens=10, oversize="drop")
    assert plan.bins == [[0, 2]] and plan.dropped == [1]
    budget = len(samples[1]) - 1
    packs = pack_samples(samples, max_tokens=budget, oversize="drop")
    assert sum(p.num_samples for p in packs) == 2
    assert all(p.input_ids.shape[1] <= budget for p in packs)
    with pytest.raises(ValueError, match="exceeds max_tokens"):
        collate_packed(samples, max_tokens=budget)


def test_model_inputs_keys(samples):
    packed = collate_packed(samples)
    cpu = model_inputs(packed, "sdpa")
    assert "attention_mask" not in cpu and cpu["use_cache"] is False
    flash = model_inputs(packed, "flash_attention_2")
    assert flash["cu_seq_lens_q"].dtype == torch.int32 and flash["max_length_q"] == packed.max_seqlen
