"""Backend selection, output layers, activation checkpointing, bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from model_support import random_model

from encoder.model import OVEncoder, SeqInfo, pack_images, resolve_backend, varlen_attention

P = 14


def _model(**kw) -> OVEncoder:
    return random_model(**kw)


def _pack():
    torch.manual_seed(2)
    return pack_images([torch.randn(3, 2 * P, 2 * P), torch.randn(3, P, 3 * P), torch.randn(3, P, P)], P)


def test_backend_resolution_on_cpu():
    q = torch.randn(4, 2, 8)
    assert resolve_backend("auto", q) == "sdpa_loop"
    for name in ("flash", "torch_varlen"):
        with pytest.raises(ValueError, match="needs a CUDA tensor"):
            resolve_backend(name, q)


def _dense_masked(q, k, v, lengths, causal=False):
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    allowed = seq[:, None] == seq[None, :]
    if causal:
        allowed = allowed.tril()
    scores = torch.einsum("ihd,jhd->hij", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hij,jhd->ihd", scores.softmax(-1), v)


@pytest.mark.parametrize("lengths", [[3, 3, 3], [5, 1, 3]])
@pytest.mark.parametrize("backend", ["sdpa_loop", "sdpa_mask"])
@pytest.mark.parametrize("causal,kv_heads", [(False, 2), (True, 2), (True, 1)])
def test_attention_backends_match_dense_masked_fwd_and_grad(lengths, backend, causal, kv_heads):
    torch.manual_seed(0)
    n = sum(lengths)
    base = [torch.randn(n, 2, 16), torch.randn(n, kv_heads, 16), torch.randn(n, kv_heads, 16)]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    info = SeqInfo.from_cu_seqlens(cu)
    w = torch.randn(n, 2, 16)
    results = []
    for fn in (
        lambda q, k, v: varlen_attention(q, k, v, info, backend, causal=causal),
        lambda q, k, v: _dense_masked(q, k, v, lengths, causal),
    ):
        qkv = [t.clone().requires_grad_(True) for t in base]
        out = fn(*qkv)
        (out * w).sum().backward()
        results.append([out.detach()] + [t.grad for t in qkv])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    c = varlen_attention(
        *(t.bfloat16() for t in base), info, backend, causal=causal
    )  # upcast path under bf16
    assert c.dtype == torch.bfloat16
    torch.testing.assert_close(c.float(), results[0][0], atol=3e-2, rtol=3e-2)


def test_seq_info_reads_lengths_only_when_asked():
    cu = torch.tensor([0, 2, 7], dtype=torch.int32)
    lazy = SeqInfo(cu, 5)
    assert "lengths" not in lazy.__dict__ and lazy.num_seqs == 2  # the CUDA kernels need no host read
    assert lazy.lengths == (2, 5) and lazy.seq_ids.tolist() == [0, 0, 1, 1, 1, 1, 1]
    eager = SeqInfo.from_cu_seqlens(cu)
    assert eager.__dict__["lengths"] == (2, 5) and eager.max_seqlen == 5
    with pytest.raises(ValueError, match="not a multiple"):
        varlen_attention(torch.randn(7, 3, 4), torch.randn(7, 2, 4), torch.randn(7, 2, 4), eager)


def test_output_layer_semantics():
    model = _model().eval()
    packed = _pack()
    args = (packed.pixels, packed.positions, packed.cu_seqlens)
    with torch.no_grad():
        full = model(*args, output_layer=-2)
        early = model(*args, output_layer=-2, return_pooled=False)
        first = model(*args, output_layer=0, return_pooled=False)
        last = model(*args, output_layer=-1)
        pre = model.layernorm_pre(model.embeddings(packed.pixels))
    assert early.last_hidden_state is None and early.pooled is None
    torch.testing.assert_close(full.hidden_states, early.hidden_states, atol=0, rtol=0)
    torch.testing.assert_close(first.hidden_states, pre)
    torch.testing.assert_close(model.layernorm_post(last.hidden_states), last.last_hidden_state)


def test_no_head_model():
    model = _model(use_head=False).eval()
    assert model.head is None and not any(k.startswith("head.") for k in model.state_dict())
    packed = _pack()
    with torch.no_grad():
        out = model.forward_packed(packed, output_layer=-1)
    assert out.pooled is None
    torch.testing.assert_close(out.last_hidden_state, out.hidden_states)


def test_activation_checkpointing_gives_equal_gradients():
    packed = _pack()
    grads = []
    for ckpt in (False, True):
        model = _model(activation_checkpointing=ckpt).train()
        x = packed.pixels.clone().requires_grad_(True)
        out = model(x, packed.positions, packed.cu_seqlens)
        (out.last_hidden_state.square().mean() + out.pooled.sum()).backward()
        grads.append([x.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_bf16_autocast_and_bf16_weights():
    model = _model().eval()
    packed = _pack()
    with torch.no_grad():
        ref = model.forward_packed(packed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = model.forward_packed(packed)
        half = model.to(torch.bfloat16).forward_packed(packed)
    for out in (amp, half):
        assert torch.isfinite(out.pooled.float()).all()
        torch.testing.assert_close(out.pooled.float(), ref.pooled, atol=0.15, rtol=0.1)
    assert half.last_hidden_state.dtype == torch.bfloat16
