"""The causal LM: loading (hub id, local folder or a tiny random Qwen3), special ids, export.

The LM is a stock transformers model (``AutoModelForCausalLM``); nothing is patched. It may be wrapped
by peft later (``PeftModel``): the helpers here accept either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config

from llava_ov.model.attention import transformers_attn_implementation
from llava_ov.model.config import TINY_QWEN3, LLMConfig
from llava_ov.model.hf import set_hf_checkpointing
from llava_ov.text.tokenizer import ENDOFTEXT, IM_END, IMAGE_PAD, VIDEO_PAD, missing_special_tokens


@dataclass(frozen=True)
class SpecialTokenIds:
    """Token ids the LMM relies on (resolved from the tokenizer at build time)."""

    image_pad: int
    video_pad: int
    im_end: int
    pad: int

    @property
    def media_pads(self) -> tuple[int, int]:
        return self.image_pad, self.video_pad

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
        required = (IMAGE_PAD, VIDEO_PAD, IM_END)
        missing = missing_special_tokens(tokenizer, required)
        if missing:
            raise ValueError(f"tokenizer lacks the LMM's special tokens {missing}")
        ids = tokenizer.convert_tokens_to_ids
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids(ENDOFTEXT)
        return cls(image_pad=ids(IMAGE_PAD), video_pad=ids(VIDEO_PAD), im_end=ids(IM_END), pad=int(pad))


def build_llm(cfg: LLMConfig, vocab_size: int, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """``cfg.from_scratch`` → random Qwen3 (TINY_QWEN3 ← from_scratch, vocab = tokenizer length);
    else ``AutoModelForCausalLM.from_pretrained(cfg.path)`` (hub id or local folder)."""
    dtype = dtype or torch.float32
    attn = transformers_attn_implementation(cfg.attn_implementation)
    if cfg.from_scratch is not None:
        kwargs = {**TINY_QWEN3, "vocab_size": vocab_size, **cfg.from_scratch}
        config = Qwen3Config(**kwargs)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.path, attn_implementation=attn, dtype=dtype)
    model.config.use_cache = False  # training default; generate() turns the cache on explicitly
    return model


def fit_embeddings(llm: PreTrainedModel, vocab_size: int) -> bool:
    """Grow the input/output embeddings when the tokenizer has more tokens; True if resized.

    Never shrinks: Qwen3 checkpoints carry more embedding rows (151936) than tokenizer entries.
    """
    rows = llm.get_input_embeddings().weight.shape[0]
    if vocab_size <= rows:
        return False
    llm.resize_token_embeddings(vocab_size, mean_resizing=True)
    return True


def base_model(llm: nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (or ``llm`` itself)."""
    get_base = getattr(llm, "get_base_model", None)
    return get_base() if callable(get_base) else llm


def set_llm_checkpointing(llm: nn.Module, enabled: bool) -> None:
    """Non-reentrant activation checkpointing of the LM layers."""
    set_hf_checkpointing(base_model(llm), enabled)


def is_peft(llm: nn.Module) -> bool:
    return callable(getattr(llm, "merge_and_unload", None))


def merged_lora_state_dict(llm: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the peft-wrapped LM with the active LoRA deltas added to the base weights, under
    the plain model's key names. Nothing is modified (no in-place merge / unmerge drift in bf16, no copy
    of the model)."""
    from peft.tuners.lora import LoraLayer

    base = base_model(llm)
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            adapters = [
                a for a in module.active_adapters if a in module.lora_A or a in module.lora_embedding_A
            ]
            if adapters:
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in adapters)
    state: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = value + deltas[key].to(value.dtype) if key in deltas else value
    return state


def export_llm(llm: nn.Module, directory: str | Path) -> None:
    """``save_pretrained`` of the plain LM; a peft (LoRA) model is saved with its adapters merged into
    the weights (the training model keeps its adapters)."""
    if not is_peft(llm):
        llm.save_pretrained(str(directory))
        return
    base_model(llm).save_pretrained(str(directory), state_dict=merged_lora_state_dict(llm))


__all__ = [
    "SpecialTokenIds",
    "base_model",
    "build_llm",
    "export_llm",
    "fit_embeddings",
    "is_peft",
    "merged_lora_state_dict",
    "set_llm_checkpointing",
]
