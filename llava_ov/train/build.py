"""Building a stage's pieces from the run config: tokenizer, data config, model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from encoder.cli import check_local_path
from encoder.codec import CodecConfig
from encoder.typed_config import ConfigError
from llava_ov.data import DataConfig, codec_config, prepare_data, tokenizer_texts
from llava_ov.data.mixture import SYNTHETIC_PREFIX
from llava_ov.data.shards import missing_local_shards
from llava_ov.infer import LlavaOVProcessor
from llava_ov.model import LlavaOVModel, build_model
from llava_ov.model.towers import tower_spec
from llava_ov.text import ChatFormat, load_tokenizer
from llava_ov.text import build_tokenizer as train_bpe
from llava_ov.train import checkpoint as C
from llava_ov.train import distributed as D
from llava_ov.train.config import StageConfig, TrainConfig, previous_stage, resolve_path

logger = logging.getLogger("llava_ov.train")


def build_tokenizer(cfg: TrainConfig, env: D.DistEnv) -> Any:
    """``synthetic``: trained once from the synthetic QA texts and cached in ``{output_dir}/tokenizer``;
    ``auto``: the model's LLM tokenizer; else a path / hub id."""

    if cfg.tokenizer == "auto":
        return load_tokenizer(cfg.model.llm.tokenizer_path)
    if cfg.tokenizer != "synthetic":
        return load_tokenizer(cfg.tokenizer)

    out = Path(cfg.output_dir) / "tokenizer"
    if env.is_main and not (out / "tokenizer.json").is_file():
        train_bpe(tokenizer_texts(), cfg.tokenizer_vocab, out)
    D.barrier()
    return load_tokenizer(out)


def stage_data_config(cfg: TrainConfig, name: str) -> DataConfig:
    """Stage ``name``'s data config (resolved when the run config loaded: :meth:`TrainConfig.stage_data`,
    the same object on every call), checked against this machine and the tower: the local shards of
    its sources exist and their codec settings fit the tower."""
    data = cfg.stage_data(name)
    spec = tower_spec(cfg.model.tower)
    for source in data.sources + data.eval_sources:
        check_shards(source.name, source.shards)
        codec = codec_config(data, source)
        if codec.mode not in spec.modes or codec.patch_size != spec.patch_size:
            raise ConfigError(
                f"source {source.name!r}: codec mode {codec.mode!r} with patch {codec.patch_size} "
                f"does not fit tower {cfg.model.tower.name!r} "
                f"(modes {list(spec.modes)}, patch {spec.patch_size}); "
                "set media.budget (the budget rule derives both) or the data's codec section"
            )
    return data


def check_shards(name: str, spec: str) -> None:
    """ConfigError when a source's local shards do not exist (synthetic and remote ones pass)."""
    if spec.startswith(SYNTHETIC_PREFIX):
        return
    try:
        missing = missing_local_shards(spec)
    except ValueError as e:
        raise ConfigError(f"source {name!r}: {e}") from None
    if missing:
        raise ConfigError(
            f"source {name!r}: {len(missing)} shard file(s) of {spec!r} not found, e.g. {missing[0]}"
        )


def check_run_paths(cfg: TrainConfig) -> None:
    """The weights and tokenizer paths the run config names exist (local paths; hub ids pass), checked
    when the config loads, before any data or model (a stage's shards: stage_data_config)."""
    check_local_path(cfg.model.tower.path, "model.tower.path")
    if cfg.model.llm.from_scratch is None:
        check_local_path(cfg.model.llm.path, "model.llm.path")
    check_local_path(cfg.model.llm.tokenizer, "model.llm.tokenizer")
    if cfg.tokenizer not in ("synthetic", "auto"):
        check_local_path(cfg.tokenizer, "tokenizer")
    for name in cfg.stages:
        init = cfg.stage(name).init_from
        if init not in (None, "previous") and not resolve_path(init).exists():
            check_local_path(init, f"{name}.init_from")


def prepare(data: DataConfig, env: D.DistEnv) -> None:
    """Generate the synthetic shards once (rank 0 first; the others then find the cache)."""
    if env.is_main:
        prepare_data(data)
    D.barrier()
    if not env.is_main:
        prepare_data(data, progress=False)


def stage_processor(data: DataConfig, model: LlavaOVModel, tokenizer: Any) -> LlavaOVProcessor:
    """The processor exported with a stage: the tokenizer, the data's chat format and the codec settings
    of its first source (what inference must use to ask the model as it was taught)."""
    sources = data.sources or data.eval_sources
    codec = codec_config(data, sources[0]) if sources else CodecConfig()
    return LlavaOVProcessor(tokenizer, codec, ChatFormat(empty_think=data.empty_think), model.token_counter())


def init_path(cfg: TrainConfig, name: str, stage: StageConfig) -> Path | None:
    """Export the stage starts from (None: build from ``cfg.model``)."""
    if stage.init_from is None:
        return None
    if stage.init_from == "previous":
        prev = previous_stage(name)
        path = C.final_dir(cfg.output_dir, prev) if prev else None
        if path is None or not C.is_exported(path):
            raise ConfigError(
                f"stage {name!r} starts from the previous stage's export, but {path} does not "
                "exist: run that stage first or set init_from to an export"
            )
        return path
    path = resolve_path(stage.init_from)  # a path that does not exist is tried as a hub id
    if path.exists() and not C.is_exported(path):
        raise ConfigError(f"{name}.init_from={stage.init_from!r} is not an LMM export (no llava_ov.json)")
    return path


def build_stage_model(cfg: TrainConfig, name: str, stage: StageConfig, tokenizer: Any) -> LlavaOVModel:
    """Fresh model from ``cfg.model`` (seeded) or an export; attention / checkpointing from the run."""
    torch.manual_seed(cfg.seed)
    path = init_path(cfg, name, stage)
    if path is None:
        model = build_model(cfg.model, tokenizer)
    else:
        logger.info("stage %s: initialised from %s", name, path)
        model = LlavaOVModel.from_pretrained(
            path, llm={"attn_implementation": cfg.model.llm.attn_implementation}
        )
    ckpt = stage.activation_checkpointing
    model.set_activation_checkpointing(cfg.model.activation_checkpointing if ckpt is None else ckpt)
    if cfg.model.compile and not model.config.compile:  # an export loads eagerly
        model.compile_blocks(cfg.model.compile_backend)
    return model


__all__ = [
    "build_stage_model",
    "build_tokenizer",
    "check_run_paths",
    "check_shards",
    "init_path",
    "prepare",
    "resolve_path",
    "stage_data_config",
    "stage_processor",
]
