"""The chunked LM-head loss equals the loss on full logits (loss, d(hidden), d(weight)); the LMM's
training path (no logits) equals its logits path."""

from __future__ import annotations

import pytest
import torch
from lmm_model_support import batch_of, mixed_items, tiny_model
from torch import nn

from llava_ov.model import causal_lm_loss, lm_head_loss
from llava_ov.text.conversation import IGNORE_INDEX


def _data(b=2, n=11, d=8, v=23, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(b, n, d, generator=g, dtype=dtype)
    labels = torch.randint(0, v, (b, n), generator=g)
    labels[0, :4] = IGNORE_INDEX
    labels[1, 7:] = IGNORE_INDEX
    head = nn.Linear(d, v, bias=False).to(dtype)
    return hidden, labels, head


def _run(fn, hidden, head):
    h = hidden.clone().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    loss, n = fn(h)
    (loss * 3.0).backward()  # a scaled loss, as the trainer's weighting does
    return (
        loss.detach(),
        n,
        h.grad,
        {k: p.grad.clone() for k, p in head.named_parameters() if p.grad is not None},
    )


@pytest.mark.parametrize("chunk", [1, 3, 5, None])
@pytest.mark.parametrize("kind", ["linear", "bias", "lora"])
def test_chunked_loss_equals_full_logits(chunk, kind):
    hidden, labels, head = _data()
    if kind == "bias":  # a head that is not a plain bias-free Linear: the checkpointed chunks
        head = nn.Linear(8, 23, bias=True)
    elif kind == "lora":
        import peft

        wrapper = nn.Module()
        wrapper.lm_head = head
        wrapper = peft.get_peft_model(wrapper, peft.LoraConfig(r=2, target_modules=["lm_head"]))
        head = wrapper.base_model.model.lm_head
        with torch.no_grad():
            head.lora_B["default"].weight.normal_()
    ref = _run(lambda h: causal_lm_loss(head(h), labels), hidden, head)
    got = _run(lambda h: lm_head_loss(h, labels, head, chunk), hidden, head)
    assert got[1] == ref[1] == int((labels[:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(got[0], ref[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got[2], ref[2], atol=1e-6, rtol=1e-6)
    assert got[3].keys() == ref[3].keys() and got[3]
    for k in ref[3]:
        torch.testing.assert_close(got[3][k], ref[3][k], atol=1e-6, rtol=1e-6, msg=k)


def test_chunked_loss_bf16_close_to_full_logits():
    hidden, labels, head = _data(n=40, d=32, v=301, dtype=torch.bfloat16)
    ref = _run(lambda h: causal_lm_loss(head(h), labels), hidden, head)
    got = _run(lambda h: lm_head_loss(h, labels, head, 7), hidden, head)
    assert (
        got[0].dtype == torch.float32
        and got[2].dtype == torch.bfloat16
        and got[3]["weight"].dtype == torch.bfloat16
    )
    torch.testing.assert_close(got[0], ref[0], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(got[2].float(), ref[2].float(), atol=2e-3, rtol=2e-2)
    torch.testing.assert_close(got[3]["weight"].float(), ref[3]["weight"].float(), atol=2e-3, rtol=2e-2)


def test_no_targets_and_no_grad():
    hidden, labels, head = _data()
    labels[:] = IGNORE_INDEX
    h = hidden.clone().requires_grad_(True)
    loss, n = lm_head_loss(h, labels, head)
    assert n == 0 and float(loss.detach()) == 0.0
    loss.backward()  # a graph to every input, zero gradients
    assert not h.grad.any() and not head.weight.grad.any()
    hidden, labels, head = _data()
    with torch.no_grad():
        loss, _ = lm_head_loss(hidden, labels, head, 4)
    torch.testing.assert_close(loss, causal_lm_loss(head(hidden), labels)[0].detach())


def test_lmm_training_path_equals_logits_path(tokenizer):
    model = tiny_model(tokenizer)
    batch = batch_of(mixed_items(tokenizer, model.token_counter()), tokenizer)
    results = []
    for kw in ({"return_logits": True}, {}):
        model.zero_grad(set_to_none=True)
        model.loss_chunk = 5
        out = model(batch, **kw)
        out.loss.backward()
        assert (out.logits is None) == (not kw)
        results.append(
            (
                out.loss.detach(),
                out.num_targets,
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        )
    (a_loss, a_n, a_grads), (b_loss, b_n, b_grads) = results
    assert a_n == b_n > 0 and a_grads.keys() == b_grads.keys()
    torch.testing.assert_close(a_loss, b_loss, atol=1e-6, rtol=1e-6)
    for name in a_grads:
        torch.testing.assert_close(a_grads[name], b_grads[name], atol=1e-6, rtol=1e-5, msg=name)
