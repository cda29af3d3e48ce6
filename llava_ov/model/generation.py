"""Generation from prompt embeddings: packed / padded prompts → left-padded rows → ``llm.generate``."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from llava_ov.text.packing import PackedBatch, PaddedBatch


def prompt_rows(embeds: Tensor, text: PackedBatch | PaddedBatch) -> list[Tensor]:
    """One ``[L_i, d]`` embedding row per prompt (packed: split at ``cu_seqlens``; padded: unpadded)."""
    if isinstance(text, PackedBatch):
        bounds = [int(c) for c in text.cu_seqlens.tolist()]
        return [embeds[0, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    mask = text.attention_mask.to(torch.bool)
    if not bool(mask.any(dim=1).all()):
        raise ValueError("a prompt of the padded batch is empty")
    if not bool((mask.cummin(dim=1).values == mask).all()):
        raise ValueError("padded prompts must be right-padded (collate_padded)")
    return [embeds[i, : int(mask[i].sum())] for i in range(mask.shape[0])]


def left_pad(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-align the rows: ``inputs_embeds [B, L, d]`` (zeros on the left) and ``attention_mask``."""
    width = max(r.shape[0] for r in rows)
    first = rows[0]
    embeds = first.new_zeros(len(rows), width, first.shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        embeds[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return embeds, mask


def cut_at_stop(ids: list[int], stop: list[int]) -> list[int]:
    """Tokens before the first stop token."""
    for i, t in enumerate(ids):
        if t in stop:
            return ids[:i]
    return ids


def zero3_synced(llm: nn.Module) -> bool:
    """DeepSpeed ZeRO-3 partitioned parameters in a multi-rank run: every rank must keep stepping until
    all have finished (``synced_gpus``), since each forward all-gathers the weights."""
    partitioned = hasattr(next(llm.parameters()), "ds_id")
    return partitioned and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def generate_from_embeds(
    llm: nn.Module, rows: list[Tensor], stop: list[int], max_new_tokens: int, do_sample: bool, **kw: Any
) -> list[list[int]]:
    """``llm.generate(inputs_embeds=...)`` (transformers returns only the new tokens then)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    embeds, mask = left_pad(rows)
    kw.setdefault("eos_token_id", stop)
    kw.setdefault("pad_token_id", stop[-1])
    kw.setdefault("synced_gpus", zero3_synced(llm))
    out = llm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        use_cache=True,
        **kw,
    )
    sequences = out if isinstance(out, Tensor) else out.sequences
    return [cut_at_stop(seq.tolist(), stop) for seq in sequences]


__all__ = ["cut_at_stop", "generate_from_embeds", "left_pad", "prompt_rows", "zero3_synced"]
