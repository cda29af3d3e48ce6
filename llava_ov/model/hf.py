"""transformers helpers shared by the LLM (:mod:`llava_ov.model.llm`) and the transformers towers."""

from __future__ import annotations

from torch import nn


def set_hf_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Non-reentrant activation checkpointing of a transformers model (≥ 5.x names it
    ``activation_checkpointing_*``; older versions ``gradient_checkpointing_*``)."""
    new_api = hasattr(model, "activation_checkpointing_enable")
    if enabled and new_api:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif new_api:
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


__all__ = ["set_hf_checkpointing"]
