"""Variable-length (packed) self-attention backends.

All backends take ``q, k, v`` of shape ``[N_total, H, head_dim]`` plus a :class:`SeqInfo` describing how
the N_total tokens are split into sequences, and return ``[N_total, H, head_dim]``; tokens attend only
within their own sequence (no causal mask).

* ``flash``: ``flash_attn.flash_attn_varlen_func`` (CUDA, fp16/bf16; imported lazily, optional).
* ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (torch's own FlashAttention varlen op;
  CUDA, fp16/bf16).
* ``sdpa_loop``: ``scaled_dot_product_attention`` per sequence (one batched call when all sequences
  have the same length).  Works everywhere; the CPU default.
* ``sdpa_mask``: one SDPA call over the whole pack with a block-diagonal boolean mask (O(N_total^2)
  memory; a simple reference-like path, fine for small packs).

On CPU, half-precision inputs are upcast to fp32 for the SDPA paths so that the softmax runs in fp32;
the flash kernels accumulate the softmax in fp32 internally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class SeqInfo:
    """How a pack of ``N_total`` tokens splits into sequences (computed once per forward)."""

    cu_seqlens: Tensor  # int32 [B + 1], on the tokens' device
    lengths: tuple[int, ...]
    max_seqlen: int
    seq_ids: Tensor  # int64 [N_total], index of each token's sequence

    @property
    def num_seqs(self) -> int:
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: Tensor, device: torch.device | str | None = None) -> SeqInfo:
        cu_list = [int(c) for c in cu_seqlens.tolist()]
        lengths = tuple(b - a for a, b in zip(cu_list[:-1], cu_list[1:]))
        device = cu_seqlens.device if device is None else torch.device(device)
        lens_t = torch.tensor(lengths, dtype=torch.long, device=device)
        seq_ids = torch.repeat_interleave(torch.arange(len(lengths), device=device), lens_t)
        return cls(
            cu_seqlens=cu_seqlens.to(device=device, dtype=torch.int32),
            lengths=lengths,
            max_seqlen=max(lengths, default=0),
            seq_ids=seq_ids,
        )


@functools.cache
def _flash_varlen_func() -> Callable | None:
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


@functools.cache
def _torch_varlen_func() -> Callable | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def backend_unavailable_reason(name: str, q: Tensor) -> str | None:
    """Why ``name`` cannot run on ``q`` (``None`` when it can)."""
    if name in ("sdpa_loop", "sdpa_mask"):
        return None
    if name not in ("flash", "torch_varlen"):
        return f"unknown attention backend {name!r}"
    if not q.is_cuda:
        return f"{name} needs a CUDA tensor (got device {q.device})"
    if q.dtype not in _HALF:
        return f"{name} needs fp16/bf16 inputs (got {q.dtype})"
    if name == "flash" and _flash_varlen_func() is None:
        return "flash_attn is not installed"
    if name == "torch_varlen":
        if _torch_varlen_func() is None:
            return "torch.nn.attention.varlen is not available in this torch build"
        if not torch.backends.cuda.is_flash_attention_available():
            return "this torch build has no CUDA flash attention kernel"
    return None


def resolve_backend(requested: str, q: Tensor) -> str:
    """Pick the backend for ``q``: ``auto`` prefers flash, then torch_varlen, then sdpa_loop."""
    if requested == "auto":
        for name in ("flash", "torch_varlen"):
            if backend_unavailable_reason(name, q) is None:
                return name
        return "sdpa_loop"
    reason = backend_unavailable_reason(requested, q)
    if reason is not None:
        raise ValueError(f"attention backend {requested!r} unavailable: {reason}")
    return requested


def _flash(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo) -> Tensor:
    fn = _flash_varlen_func()
    cu = info.cu_seqlens
    return fn(q, k, v, cu, cu, info.max_seqlen, info.max_seqlen, dropout_p=0.0, causal=False)


def _torch_varlen(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo) -> Tensor:
    fn = _torch_varlen_func()
    cu = info.cu_seqlens
    return fn(q, k, v, cu, cu, info.max_seqlen, info.max_seqlen)


def _upcast_on_cpu(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if q.device.type == "cpu" and q.dtype != torch.float32:
        return q.float(), k.float(), v.float()
    return q, k, v


def _sdpa_loop(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo) -> Tensor:
    dtype = q.dtype
    q, k, v = _upcast_on_cpu(q, k, v)
    n, h, d = q.shape
    if len(set(info.lengths)) == 1:  # equal lengths: one batched call
        b = info.num_seqs

        def split(x: Tensor) -> Tensor:
            return x.view(b, n // b, h, d).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(n, h, d).to(dtype)
    outs = []
    for qs, ks, vs in zip(*(x.split(info.lengths) for x in (q, k, v))):
        # 4-D [1, H, L, d] inputs: 3-D ones miss the fused CPU kernel and fall back to the math path
        o = F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in (qs, ks, vs)))
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs).to(dtype)


def _sdpa_mask(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo) -> Tensor:
    dtype = q.dtype
    q, k, v = _upcast_on_cpu(q, k, v)
    mask = info.seq_ids[:, None] == info.seq_ids[None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask
    )
    return out[0].transpose(0, 1).to(dtype)


_BACKENDS: dict[str, Callable[[Tensor, Tensor, Tensor, SeqInfo], Tensor]] = {
    "flash": _flash,
    "torch_varlen": _torch_varlen,
    "sdpa_loop": _sdpa_loop,
    "sdpa_mask": _sdpa_mask,
}


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo, backend: str = "auto") -> Tensor:
    """Packed non-causal attention; ``backend`` as in the module docstring (or ``auto``)."""
    return _BACKENDS[resolve_backend(backend, q)](q, k, v, info)


__all__ = ["SeqInfo", "backend_unavailable_reason", "resolve_backend", "varlen_attention"]
