"""What trains and how fast: frozen modules, LoRA adapters, AdamW parameter groups per module.

Groups are named ``{module}`` (weight decay) and ``{module}/no_decay`` (norms, biases and every other
parameter with fewer than 2 dimensions), with the module's peak LR in ``base_lr``; the trainer sets
``lr = base_lr · lr_factor(step)`` on every group before each optimizer step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llava_ov.train.config import MODULES, LoraConfig, OptimConfig, StageConfig


def module_of(name: str) -> str:
    """``vision`` / ``projector`` / ``llm`` for a parameter name of :class:`LlavaOVModel`."""
    for module, prefix in MODULES.items():
        if name.startswith(prefix):
            return module
    raise ValueError(f"parameter {name!r} belongs to no module of {list(MODULES)}")


def no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


def apply_lora(model: nn.Module, cfg: LoraConfig) -> None:
    """Wrap ``model.llm`` with peft LoRA adapters (the LLM's own weights become frozen)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    model.llm = get_peft_model(model.llm, peft_cfg)


def configure_trainable(model: nn.Module, stage: StageConfig) -> None:
    """Freeze everything, unfreeze ``stage.trainable``; with LoRA the LLM trains through adapters only."""
    model.requires_grad_(False)
    for module in stage.trainable:
        if module == "llm" and stage.lora.enabled:
            continue
        getattr(model, MODULES[module].rstrip(".")).requires_grad_(True)
    if stage.lora.enabled:
        apply_lora(model, stage.lora)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the stage leaves no trainable parameter")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters, per module and decay / no-decay (empty ones left out)."""
    groups: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        module = module_of(name)
        decay = not no_decay(name, p)
        key = module if decay else f"{module}/no_decay"
        if key not in groups:
            lr = cfg.module_lr(module)
            groups[key] = {
                "name": key,
                "params": [],
                "lr": lr,
                "base_lr": lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def set_lr(optimizer: Any, factor: float) -> dict[str, float]:
    """``lr = base_lr · factor`` on every group; returns ``{group name: lr}``."""
    lrs = {}
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
        lrs[group.get("name", str(len(lrs)))] = group["lr"]
    return lrs


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per module and trainable ones: ``{vision, projector, llm, trainable, total}``."""
    counts = dict.fromkeys(MODULES, 0) | {"trainable": 0, "total": 0}
    for name, p in model.named_parameters():
        n = p.ds_numel if hasattr(p, "ds_numel") else p.numel()  # ZeRO-3 partitions show 0 elements
        counts[module_of(name)] += n
        counts["total"] += n
        counts["trainable"] += n if p.requires_grad else 0
    return counts


__all__ = [
    "apply_lora",
    "build_optimizer",
    "configure_trainable",
    "count_parameters",
    "module_of",
    "no_decay",
    "param_groups",
    "set_lr",
]
