"""Packed causal attention for the LLM, registered through transformers' public interfaces.

``attn_implementation: auto`` (the default) selects :data:`PACKED`, an attention function registered
with ``transformers.AttentionInterface`` and a mask function registered with its
``AttentionMaskInterface`` under the same name. Nothing of transformers is patched.

* **Packed batch** (batch dim 1, ``cu_seq_lens_q`` and ``max_length_q`` in the forward's keyword
  arguments, as :func:`llava_ov.text.model_inputs` passes them): the mask function returns ``None`` (no
  ``[L, L]`` mask is ever built) and the attention runs causally *within each sample* through
  :func:`encoder.model.attention.varlen_attention`: flash-attn's varlen kernel when installed, torch's
  ``varlen_attn`` on CUDA otherwise, an exact per-sample SDPA on CPU. Its cost is linear in the
  number of samples and quadratic only in each sample's own length, not in the pack's. Grouped-query
  attention (fewer key/value heads) is handled by every kernel.
* A batch-1 call with restarted ``position_ids`` but no ``cu_seq_lens_q`` (e.g. transformers'
  ``DataCollatorWithFlattening`` without its flash kwargs) gets its boundaries from the positions.
* **Anything else** (padded batches, generation with a KV cache): the mask function builds what
  ``sdpa`` builds and the attention is transformers' own ``sdpa`` function, so results equal
  ``attn_implementation: sdpa`` exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from encoder.model.attention import SeqInfo, varlen_attention

PACKED = "llava_ov_packed"


def transformers_attn_implementation(name: str) -> str:
    """The name transformers is given for a config value (``auto`` → :data:`PACKED`, registered here)."""
    if name == "auto":
        register_packed_attention()
        return PACKED
    return name


def cu_seqlens_from_positions(position_ids: Tensor) -> Tensor | None:
    """``cu_seqlens`` (int32) of a batch-1 pack whose positions restart at every sample; ``None`` when
    the positions never restart (one sequence)."""
    pos = position_ids[0]
    starts = torch.nonzero(pos.diff() != 1).flatten() + 1
    if starts.numel() == 0:
        return None
    edges = [
        torch.zeros(1, dtype=starts.dtype, device=pos.device),
        starts,
        torch.full((1,), pos.numel(), dtype=starts.dtype, device=pos.device),
    ]
    return torch.cat(edges).to(torch.int32)


def packed_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers attention function (``query [B, H, L, d]``, ``key/value [B, H_kv, L, d]`` →
    ``[B, L, H, d]``); see the module docstring."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu, max_len = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    fresh = attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
    if cu is None and fresh and kwargs.get("position_ids") is not None:
        cu = cu_seqlens_from_positions(kwargs["position_ids"])
        max_len = None
    if cu is None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            sliding_window=sliding_window,
            **kwargs,
        )
    if not fresh:
        raise ValueError(
            "packed attention takes one packed row without a mask or KV cache "
            f"(query {tuple(query.shape)}, key {tuple(key.shape)}, mask {attention_mask is not None})"
        )
    if sliding_window is not None:
        raise ValueError(f"packed attention has no sliding window (layer asks for {sliding_window})")
    if dropout and module.training:
        raise ValueError(
            f"packed attention has no attention dropout (got {dropout}); set the LLM's attention_dropout=0"
        )
    cu = cu.to(device=query.device, dtype=torch.int32)
    info = SeqInfo(cu, int(max_len)) if max_len is not None else SeqInfo.from_cu_seqlens(cu)
    if not getattr(module, "is_causal", True):
        raise ValueError("packed attention is causal; this layer is not")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [L, H, d]: views of the projections
    out = varlen_attention(q, k, v, info, "auto", causal=True, scale=scaling)
    return out.unsqueeze(0), None


def packed_causal_mask(**kwargs: Any) -> Tensor | None:
    """transformers mask function: ``None`` for one fresh row without padding (a pack, or a single
    sequence: the attention needs no mask), else exactly what ``sdpa`` gets."""
    from transformers.masking_utils import sdpa_mask

    q_len = kwargs["q_length"] if "q_length" in kwargs else kwargs["cache_position"].shape[0]
    offset = kwargs.get("q_offset", 0) or kwargs.get("kv_offset", 0)
    if (
        kwargs.get("attention_mask") is None
        and kwargs.get("batch_size") == 1
        and not offset
        and kwargs.get("kv_length") == q_len
    ):
        return None
    return sdpa_mask(**kwargs)


def register_packed_attention() -> None:
    """Register :data:`PACKED` with transformers (idempotent; a dict entry, done on first use)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED, packed_attention_forward)
    AttentionMaskInterface.register(PACKED, packed_causal_mask)


__all__ = [
    "PACKED",
    "cu_seqlens_from_positions",
    "packed_attention_forward",
    "packed_causal_mask",
    "register_packed_attention",
    "transformers_attn_implementation",
]
