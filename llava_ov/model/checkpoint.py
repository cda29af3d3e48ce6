"""LMM checkpoints: an HF-style folder that is both the inference artefact and the next stage's init.

Layout of ``out_dir``::

    llm/                    llm.save_pretrained (LoRA merged) + the tokenizer
    vision_tower/           the tower's own save_pretrained (OV-Encoder: config.json + model.safetensors)
    projector.safetensors   projector weights
    llava_ov.json           {"format", "version", "model": ModelConfig, "special_tokens": {...}}
    processor.json          the processor (codec settings, chat format): llava_ov.infer.LlavaOVProcessor

Version 1 exports kept the codec settings in ``llava_ov.json`` (``"codec"``) and have no
``processor.json``; they still load (the processor reads that field).

In ``llava_ov.json`` the weight paths are the subfolder names (relative), so the folder can move;
:func:`load_checkpoint` resolves them against the folder. Saving needs the full parameters: under
ZeRO-3 gather them first (e.g. on rank 0 inside ``deepspeed.zero.GatheredParameters``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from encoder.model.checkpoint import resolve_checkpoint_dir
from encoder.typed_config import merge_config
from llava_ov.model.config import ModelConfig
from llava_ov.model.llm import export_llm
from llava_ov.model.projector import PROJECTOR_WEIGHTS, save_projector
from llava_ov.text.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from llava_ov.model.lmm import LlavaOVModel

CONFIG_FILE = "llava_ov.json"
LLM_DIR = "llm"
TOWER_DIR = "vision_tower"
FORMAT = "llava_ov"
VERSION = 2


def saved_config(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the weight paths pointing at the checkpoint's subfolders (training-time settings
    such as ``compile`` off: a loaded export runs eagerly unless asked)."""
    return dataclasses.replace(
        cfg,
        compile=False,
        tower=dataclasses.replace(cfg.tower, path=TOWER_DIR),
        projector=dataclasses.replace(cfg.projector, path=PROJECTOR_WEIGHTS),
        llm=dataclasses.replace(cfg.llm, path=LLM_DIR, from_scratch=None, tokenizer=None),
    )


def save_checkpoint(model: LlavaOVModel, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_llm(model.llm, out / LLM_DIR)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(out / LLM_DIR))
    model.vision_tower.save_pretrained(out / TOWER_DIR)
    save_projector(model.projector, out / PROJECTOR_WEIGHTS)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": saved_config(model.config).to_dict(),
        "special_tokens": dataclasses.asdict(model.token_ids),
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_checkpoint_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The local folder of a checkpoint (hub ids are downloaded) and its ``llava_ov.json``."""
    folder = resolve_checkpoint_dir(path)
    file = folder / CONFIG_FILE
    if not file.is_file():
        hint = ""
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            hint = " (it holds a vision-tower export: load it as a tower, model.tower.path=...)"
        elif (folder / "final" / CONFIG_FILE).is_file():
            hint = f" (a stage folder: its export is {folder / 'final'})"
        raise ValueError(f"{folder} is not an LMM checkpoint: no {CONFIG_FILE}{hint}")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"{file}: unsupported format {meta.get('format')!r} version {meta.get('version')}")
    return folder, meta


def resolve_paths(cfg: ModelConfig, folder: Path) -> ModelConfig:
    """Relative weight paths that exist inside ``folder`` become paths under it."""

    def local(p: str | None) -> str | None:
        return str(folder / p) if p is not None and (folder / p).exists() else p

    return dataclasses.replace(
        cfg,
        tower=dataclasses.replace(cfg.tower, path=local(cfg.tower.path)),
        projector=dataclasses.replace(cfg.projector, path=local(cfg.projector.path)),
        llm=dataclasses.replace(cfg.llm, path=local(cfg.llm.path), tokenizer=local(cfg.llm.tokenizer)),
    )


def load_checkpoint(
    path: str | Path, build: Callable[..., LlavaOVModel], dtype: torch.dtype | None = None, **overrides: Any
) -> LlavaOVModel:
    """The model of an export: its config (``overrides`` merged in) and tokenizer, built by ``build``
    (:func:`llava_ov.model.lmm.build_model`, passed in so that this module never imports the model)."""
    folder, meta = read_checkpoint_meta(path)
    cfg = resolve_paths(ModelConfig.from_dict(meta["model"]), folder)
    if overrides:
        cfg = merge_config(cfg, overrides)
    tokenizer = load_tokenizer(cfg.llm.tokenizer_path)
    return build(cfg, tokenizer, dtype=dtype)


__all__ = [
    "CONFIG_FILE",
    "LLM_DIR",
    "TOWER_DIR",
    "load_checkpoint",
    "read_checkpoint_meta",
    "resolve_paths",
    "save_checkpoint",
    "saved_config",
]
