"""Variable-length (packed) self-attention backends.

All backends take ``q`` of shape ``[N_total, H, head_dim]`` and ``k, v`` of shape ``[N_total, H_kv,
head_dim]`` (``H_kv`` divides ``H``: grouped-query attention when smaller) plus a :class:`SeqInfo`
describing how the N_total tokens split into sequences, and return ``[N_total, H, head_dim]``; tokens
attend only within their own sequence, to every token of it (the ViT) or, with ``causal=True``, to it
and the tokens before it (a packed causal LM).

* ``flash``: ``flash_attn.flash_attn_varlen_func`` (CUDA, fp16/bf16; imported lazily, optional).
* ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (torch's own FlashAttention varlen op;
  CUDA, fp16/bf16). Its keyword arguments changed between torch releases (``is_causal`` vs
  ``window_size``, ``enable_gqa``); :func:`_torch_varlen` reads its signature.
* ``sdpa_loop``: ``scaled_dot_product_attention`` per sequence (one batched call when all sequences
  have the same length). Exact, works everywhere; the CPU default. Cost linear in the number of
  sequences, quadratic only in each one's own length.
* ``sdpa_mask``: one SDPA call over the whole pack with a block-diagonal boolean mask (O(N_total^2)
  memory; a simple reference-like path, fine for small packs).

On CPU, half-precision inputs are upcast to fp32 for the SDPA paths so that the softmax runs in fp32;
the flash kernels accumulate the softmax in fp32 internally. The CUDA kernels need only
``cu_seqlens`` and ``max_seqlen``; the per-sequence lengths on the host (a device sync when
``cu_seqlens`` lives on the GPU) are read only by the SDPA paths, when they first ask.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True, eq=False)
class SeqInfo:
    """How a pack of ``N_total`` tokens splits into sequences (made once per forward)."""

    cu_seqlens: Tensor  # int32 [B + 1], on the tokens' device
    max_seqlen: int

    @functools.cached_property
    def lengths(self) -> tuple[int, ...]:
        cu = [int(c) for c in self.cu_seqlens.tolist()]
        return tuple(b - a for a, b in zip(cu[:-1], cu[1:]))

    @functools.cached_property
    def seq_ids(self) -> Tensor:
        """int64 [N_total]: the index of each token's sequence."""
        lens = torch.tensor(self.lengths, dtype=torch.long, device=self.cu_seqlens.device)
        return torch.repeat_interleave(torch.arange(len(self.lengths), device=lens.device), lens)

    @property
    def num_seqs(self) -> int:
        return int(self.cu_seqlens.numel()) - 1

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: Tensor, device: torch.device | str | None = None) -> SeqInfo:
        """From ``cu_seqlens`` (read on the host once; move it to ``device``)."""
        cu_list = [int(c) for c in cu_seqlens.tolist()]
        lengths = tuple(b - a for a, b in zip(cu_list[:-1], cu_list[1:]))
        device = cu_seqlens.device if device is None else torch.device(device)
        info = cls(cu_seqlens.to(device=device, dtype=torch.int32), max(lengths, default=0))
        info.__dict__["lengths"] = lengths  # known already: no device read later
        return info


_IMPORTED: dict[
    str, object
] = {}  # a plain memo (not functools.cache): torch.compile traces it without warnings


def _flash_varlen_func() -> Callable | None:
    if "flash" not in _IMPORTED:
        try:
            from flash_attn import flash_attn_varlen_func
        except ImportError:
            flash_attn_varlen_func = None
        _IMPORTED["flash"] = flash_attn_varlen_func
    return _IMPORTED["flash"]  # type: ignore[return-value]


def _torch_varlen_func() -> Callable | None:
    if "torch_varlen" not in _IMPORTED:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            varlen_attn = None
        _IMPORTED["torch_varlen"] = varlen_attn
        _IMPORTED["torch_varlen_params"] = (
            frozenset(inspect.signature(varlen_attn).parameters) if varlen_attn else frozenset()
        )
    return _IMPORTED["torch_varlen"]  # type: ignore[return-value]


def _torch_varlen_params() -> frozenset[str]:
    _torch_varlen_func()
    return _IMPORTED["torch_varlen_params"]  # type: ignore[return-value]


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


def _repeat_kv(k: Tensor, heads: int) -> Tensor:
    """``[N, H_kv, d]`` → ``[N, heads, d]`` (each kv head serves ``heads / H_kv`` query heads)."""
    groups = heads // k.shape[1]
    return k if groups == 1 else k.repeat_interleave(groups, dim=1)


def _flash(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo, causal: bool, scale: float | None) -> Tensor:
    fn = _flash_varlen_func()
    cu, m = info.cu_seqlens, info.max_seqlen
    return fn(q, k, v, cu, cu, m, m, dropout_p=0.0, softmax_scale=scale, causal=causal)  # GQA native


def _torch_varlen(
    q: Tensor, k: Tensor, v: Tensor, info: SeqInfo, causal: bool, scale: float | None
) -> Tensor:
    fn, params = _torch_varlen_func(), _torch_varlen_params()
    kwargs: dict = {}
    if "is_causal" in params:  # torch <= 2.11
        kwargs["is_causal"] = causal
    elif causal:
        kwargs["window_size"] = (-1, 0)
    if "scale" in params:
        kwargs["scale"] = scale
    elif scale is not None:
        q = q * (scale * q.shape[-1] ** 0.5)
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            k, v = _repeat_kv(k, q.shape[1]), _repeat_kv(v, q.shape[1])
    cu, m = info.cu_seqlens, info.max_seqlen
    return fn(q, k, v, cu, cu, m, m, **kwargs)


def _upcast_on_cpu(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if q.device.type == "cpu" and q.dtype != torch.float32:
        return q.float(), k.float(), v.float()
    return q, k, v


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float | None, mask: Tensor | None = None
) -> Tensor:
    """SDPA on ``[B, L, H, d]`` tensors (kv heads repeated for GQA), back in that layout."""
    heads = q.shape[2]
    k, v = (_repeat_kv(t.flatten(0, 1), heads).view(*t.shape[:2], heads, t.shape[-1]) for t in (k, v))
    # 4-D [B, H, L, d] inputs: 3-D ones miss the fused CPU kernel and fall back to the math path
    out = F.scaled_dot_product_attention(
        *(t.transpose(1, 2) for t in (q, k, v)),
        attn_mask=mask,
        is_causal=causal and mask is None,
        scale=scale,
    )
    return out.transpose(1, 2)


def _sdpa_loop(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo, causal: bool, scale: float | None) -> Tensor:
    dtype = q.dtype
    q, k, v = _upcast_on_cpu(q, k, v)
    lengths = info.lengths
    if len(set(lengths)) == 1:  # equal lengths: one batched call
        b, n = len(lengths), q.shape[0]
        out = _sdpa(*(t.view(b, n // b, *t.shape[1:]) for t in (q, k, v)), causal, scale)
        return out.reshape(q.shape).to(dtype)
    outs = [
        _sdpa(qs[None], ks[None], vs[None], causal, scale)[0]
        for qs, ks, vs in zip(*(x.split(lengths) for x in (q, k, v)))
    ]
    return torch.cat(outs).to(dtype)


def _sdpa_mask(q: Tensor, k: Tensor, v: Tensor, info: SeqInfo, causal: bool, scale: float | None) -> Tensor:
    dtype = q.dtype
    q, k, v = _upcast_on_cpu(q, k, v)
    mask = info.seq_ids[:, None] == info.seq_ids[None, :]
    if causal:
        mask = mask.tril()
    return _sdpa(q[None], k[None], v[None], causal, scale, mask)[0].to(dtype)


_BACKENDS: dict[str, Callable[[Tensor, Tensor, Tensor, SeqInfo, bool, float | None], Tensor]] = {
    "flash": _flash,
    "torch_varlen": _torch_varlen,
    "sdpa_loop": _sdpa_loop,
    "sdpa_mask": _sdpa_mask,
}


def varlen_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    info: SeqInfo,
    backend: str = "auto",
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Packed attention within each sequence; ``backend`` as in the module docstring (or ``auto``);
    ``scale`` defaults to ``head_dim ** -0.5``."""
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads {q.shape[1]} are not a multiple of key/value heads {k.shape[1]}")
    return _BACKENDS[resolve_backend(backend, q)](q, k, v, info, causal, scale)


__all__ = ["SeqInfo", "backend_unavailable_reason", "resolve_backend", "varlen_attention"]
