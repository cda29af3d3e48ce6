"""Next-token cross-entropy of the LMM, with or without the full-vocabulary logits.

:func:`causal_lm_loss` takes logits ``[B, L, V]`` (the engine's scoring path, which needs them).
Training uses :func:`lm_head_loss`: the LM head runs only on the positions that have a target, a chunk
of rows at a time, with fp32 cross-entropy per chunk, so that at most ``[chunk, V]`` logits are alive
at once instead of ``[L, V]`` (Qwen3's V is 151,936: 16k tokens would hold 10 GB of fp32 logits).

* A plain ``nn.Linear`` head (the usual case, tied or not): :class:`LinearCrossEntropy`, which computes
  each chunk's gradients in the forward pass (the logits' gradient is ``softmax - onehot``), keeps
  only ``d(hidden)`` and an fp32 ``d(weight)`` and frees the chunk: no recomputation, three GEMMs per
  chunk as before.
* Any other head (LoRA on ``lm_head``, a ZeRO-3 partitioned weight, a bias): each chunk's head call
  and loss run under non-reentrant activation checkpointing (its logits are recomputed in backward).

Both equal :func:`causal_lm_loss` on the full logits (loss and every gradient;
tests/llava_ov/model/test_loss.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from llava_ov.text.conversation import IGNORE_INDEX

#: fp32 logits per chunk (elements): 2^28 = 1 GiB, 1,766 rows at Qwen3's vocabulary
CHUNK_ELEMENTS = 1 << 28


def causal_lm_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Token-mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]`` (fp32 on the targets
    only: the full logits are never upcast)."""
    labels = labels[:, 1:].to(logits.device)
    mask = labels != IGNORE_INDEX
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    picked = logits[:, :-1][mask].float()
    return F.cross_entropy(picked, labels[mask], reduction="sum") / n, n


class LinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden_i @ weight.T, targets_i)`` in chunks of rows (see the module docstring).

    The logits are computed in the weight's dtype and upcast to fp32, as ``lm_head`` + ``.float()``
    does; the logits' gradient is cast back to that dtype for the two gradient GEMMs, as autograd does.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None])[:, 0]).sum()
            if not (need_h or need_w):
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(t.numel(), device=t.device), t] -= 1.0
            g = probs.to(weight.dtype)
            del logits, probs
            if need_h:
                grad_h[start : start + chunk] = g @ weight
            if need_w:
                grad_w += g.T @ h  # GEMM in the weight's dtype (fp32 accumulation inside), summed in fp32
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        if grad_h is not None:
            grad_h = grad_h * grad_out.to(grad_h.dtype)
        if grad_w is not None:
            grad_w = (grad_w * grad_out).to(ctx.weight_dtype)
        return grad_h, grad_w, None, None


def _chunk_ce(head: nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def lm_head_loss(
    hidden: Tensor, labels: Tensor, head: nn.Module, chunk: int | None = None
) -> tuple[Tensor, int]:
    """:func:`causal_lm_loss` of ``head(hidden)`` without its full logits: ``hidden [B, L, d]`` (the
    LM's last hidden states), ``labels [B, L]``; ``chunk`` rows per head call (default: 1 GiB of fp32
    logits)."""
    labels = labels[:, 1:].to(hidden.device)
    mask = labels != IGNORE_INDEX
    n = int(mask.sum())
    weight = getattr(head, "weight", None)
    if n == 0:
        return hidden.sum() * 0.0 + (weight.sum() * 0.0 if weight is not None else 0.0), 0
    rows, targets = hidden[:, :-1][mask], labels[mask]
    vocab = head.out_features if hasattr(head, "out_features") else weight.shape[0]
    chunk = chunk or max(1, CHUNK_ELEMENTS // vocab)
    plain = type(head) is nn.Linear and head.bias is None and not hasattr(weight, "ds_id")
    if plain:
        total = LinearCrossEntropy.apply(rows, weight, targets, chunk)
    else:
        total = sum(
            checkpoint(_chunk_ce, head, rows[s : s + chunk], targets[s : s + chunk], use_reentrant=False)
            for s in range(0, rows.shape[0], chunk)
        )
    return total / n, n


__all__ = ["CHUNK_ELEMENTS", "LinearCrossEntropy", "causal_lm_loss", "lm_head_loss"]
