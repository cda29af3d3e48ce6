"""The packed causal attention (``attn_implementation: auto``) against transformers' own sdpa / eager:
loss and every parameter gradient on padded and packed batches (Qwen3 shapes with GQA, one-token and
odd-length samples), no ``[L, L]`` mask, generation with the KV cache unchanged."""

from __future__ import annotations

import pytest
import torch

from llava_ov.model.attention import (
    PACKED,
    cu_seqlens_from_positions,
    packed_causal_mask,
    transformers_attn_implementation,
)
from llava_ov.text.conversation import IGNORE_INDEX, TokenizedSample
from llava_ov.text.packing import collate_packed, collate_padded, model_inputs

VOCAB = 97


def _qwen3(attn: str, kv_heads: int = 2):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        head_dim=16,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        use_cache=False,
    )
    model = Qwen3ForCausalLM(config).float()
    model.set_attn_implementation(transformers_attn_implementation(attn))
    return model.train()


def _samples(lengths: list[int]) -> list[TokenizedSample]:
    g = torch.Generator().manual_seed(sum(lengths))
    out = []
    for n in lengths:
        ids = torch.randint(0, VOCAB, (n,), generator=g)
        labels = ids.clone()
        labels[: n // 3] = IGNORE_INDEX  # a prompt part without targets
        out.append(TokenizedSample(ids, labels, []))
    return out


def _loss_and_grads(model, kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(a, b, tol=1e-5):
    torch.testing.assert_close(a[0], b[0], atol=tol, rtol=tol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=tol, rtol=tol, msg=name)


LENGTHS = [[7, 1, 12, 5], [2, 1], [9, 9, 9], [13, 1, 1, 4]]


@pytest.mark.parametrize("kv_heads", [2, 1, 4])
@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda x: "-".join(map(str, x)))
def test_packed_attention_equals_sdpa_on_packed_and_padded(lengths, kv_heads):
    samples = _samples(lengths)
    packed, padded = collate_packed(samples), collate_padded(samples, pad_token_id=0)
    auto = _loss_and_grads(_qwen3("auto", kv_heads), model_inputs(packed, "auto"))
    sdpa_packed = _loss_and_grads(_qwen3("sdpa", kv_heads), model_inputs(packed, "sdpa"))
    eager_packed = _loss_and_grads(_qwen3("eager", kv_heads), model_inputs(packed, "eager"))
    _assert_same(auto, sdpa_packed)
    _assert_same(auto, eager_packed)
    # the padded batch: transformers' loss is a token mean over the same targets
    auto_padded = _loss_and_grads(_qwen3("auto", kv_heads), model_inputs(padded, "auto"))
    sdpa_padded = _loss_and_grads(_qwen3("sdpa", kv_heads), model_inputs(padded, "sdpa"))
    _assert_same(auto_padded, sdpa_padded, tol=0)  # padded batches take transformers' sdpa itself
    _assert_same(auto, sdpa_padded)


def test_packed_attention_gets_no_mask_and_derives_boundaries_from_positions():
    samples = _samples([6, 1, 5])
    packed = collate_packed(samples)
    model = _qwen3("auto")
    seen = []
    model.model.layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True
    )
    kwargs = model_inputs(packed, "auto")
    with torch.no_grad():
        with_cu = model(**kwargs).logits
        positions_only = model(
            **{k: v for k, v in kwargs.items() if not k.startswith(("cu_seq", "max_len"))}
        ).logits
        ref = _qwen3("sdpa")(**model_inputs(packed, "sdpa")).logits
    assert seen == [None, None]  # no [L, L] mask for a pack
    torch.testing.assert_close(with_cu, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(positions_only, ref, atol=1e-5, rtol=1e-5)
    assert cu_seqlens_from_positions(packed.position_ids).tolist() == [0, 6, 7, 12]
    assert cu_seqlens_from_positions(torch.arange(5)[None]) is None
    assert packed_causal_mask(batch_size=1, q_length=12, kv_length=12, attention_mask=None) is None
    mask = packed_causal_mask(
        batch_size=2,
        q_length=3,
        kv_length=3,
        attention_mask=torch.ones(2, 3, dtype=torch.bool),
        allow_is_causal_skip=False,
    )
    assert mask.shape == (2, 1, 3, 3)


def test_packed_attention_rejects_what_it_cannot_do():
    samples = _samples([4, 3])
    model = _qwen3("auto")
    model.model.layers[0].self_attn.sliding_window = 2
    with pytest.raises(ValueError, match="no sliding window"):
        model(**model_inputs(collate_packed(samples), "auto"))


def test_generation_with_kv_cache_unchanged():
    from transformers import GenerationConfig

    prompts = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 9, 1)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left-padded, as generate_from_embeds does
        ids[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    gen = GenerationConfig(
        max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=True
    )
    outs = {}
    for attn in ("auto", "sdpa"):
        model = _qwen3(attn).eval()
        batched = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
        single = model.generate(input_ids=prompts[1][None], generation_config=gen)  # batch 1, no mask
        outs[attn] = batched, single
    assert all(torch.equal(a, b) for a, b in zip(outs["auto"], outs["sdpa"]))


@pytest.mark.parametrize("attn", ["auto", "sdpa", "eager", "flash_attention_2"])
def test_every_attn_implementation_builds(attn, tokenizer):
    from llava_ov.model import LLMConfig, build_model, debug_config

    cfg = debug_config()
    cfg.llm = LLMConfig(from_scratch={}, attn_implementation=attn)
    if attn.startswith("flash"):
        pytest.importorskip("flash_attn")
    model = build_model(cfg, tokenizer)
    expected = PACKED if attn == "auto" else attn
    assert model.llm.config._attn_implementation == expected


def test_auto_resolves_to_the_registered_function():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    assert transformers_attn_implementation("sdpa") == "sdpa"
    assert transformers_attn_implementation("auto") == PACKED
    assert (
        PACKED in AttentionInterface._global_mapping
        and PACKED in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    )


def test_compiled_layers_take_packs_of_any_length():
    """``model.compile`` compiles each decoder layer in place: packs of changing length and sample
    count give the eager loss and gradients (aot_eager: dynamo + autograd tracing, no code generation)."""
    eager, compiled = _qwen3("auto"), _qwen3("auto")
    for layer in compiled.model.layers:
        layer.compile(backend="aot_eager")
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    for lengths in ([5, 3], [7, 1, 4], [2, 9, 3, 6]):
        kwargs = model_inputs(collate_packed(_samples(lengths)), "auto")
        _assert_same(_loss_and_grads(compiled, kwargs), _loss_and_grads(eager, kwargs))
