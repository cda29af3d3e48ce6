"""Typed configuration of an LMM training run: a list of stages, each one a :class:`StageConfig`.

A run config (YAML) fills :class:`TrainConfig` strictly (unknown keys are errors listing the valid
ones) and ``key.sub=value`` CLI overrides go on top (:func:`load_train_config`). ``stages`` names the
stages to run, in order; each named stage has its own section (``align``, ``sft``). A stage's
``init_from`` is ``null`` (build ``model`` from its config), ``previous`` (the export of the stage
before it, ``{output_dir}/{stage}/final``) or a path to such an export.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from encoder.typed_config import ConfigError, Partial, check_choices, load_config, merge_config
from llava_ov.data import DataConfig, load_data_config
from llava_ov.model import LLMConfig, ModelConfig, TowerConfig
from llava_ov.model.budget import MediaConfig, media_plan
from llava_ov.model.towers import tower_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Module names used by ``trainable`` and per-module learning rates → parameter-name prefixes.
MODULES: dict[str, str] = {"vision": "vision_tower.", "projector": "projector.", "llm": "llm."}
STAGES: tuple[str, ...] = ("align", "sft")
Schedule = Literal["cosine", "linear", "constant"]
WandbMode = Literal["disabled", "offline", "online"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
WANDB_MODES: tuple[str, ...] = typing.get_args(WandbMode)
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class OptimConfig:
    """AdamW + LR schedule. ``lr_<module>`` (None: ``lr``) sets a module's peak LR."""

    lr: float = 1e-5
    lr_vision: float | None = None
    lr_projector: float | None = None
    lr_llm: float | None = None
    weight_decay: float = 0.0  # never applied to norms, biases and other 1-D parameters
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    schedule: Schedule = "cosine"  # after the warmup
    warmup_ratio: float = 0.03  # of max_steps, unless warmup_steps is set
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0  # LR at the last step, as a fraction of the peak

    def module_lr(self, module: str) -> float:
        value = getattr(self, f"lr_{module}")
        return self.lr if value is None else value

    def validate(self) -> None:
        check_choices(self, "optim.")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must hold two values, got {self.betas}")
        if not 0.0 <= self.warmup_ratio < 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("optim.warmup_ratio must be in [0, 1) and optim.min_lr_ratio in [0, 1]")
        if min(self.lr, *(self.module_lr(m) for m in MODULES)) < 0:
            raise ConfigError("learning rates must be >= 0")


@dataclass
class LoraConfig:
    """LoRA adapters on the LLM (peft); the LLM's own weights stay frozen, the export merges them."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))


@dataclass
class StageConfig:
    trainable: list[str] = field(default_factory=lambda: ["vision", "projector", "llm"])
    init_from: str | None = None  # None: build `model`; "previous": the previous stage's export; a path
    max_steps: int = 100  # optimizer steps
    grad_accum: int = 1  # packed micro-batches per optimizer step and rank
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data_config: str | None = None  # None: the run's data_config
    data: Partial[DataConfig] = field(default_factory=dict)  # on top of the run's `data`
    activation_checkpointing: bool | None = None  # None: model.activation_checkpointing
    evaluate: bool = True  # held-out generation accuracy after the stage (needs eval_sources)

    def validate(self) -> None:
        if bad := sorted(set(self.trainable) - set(MODULES)):
            raise ConfigError(f"unknown trainable module(s) {bad}; choose from {list(MODULES)}")
        if not self.trainable and not self.lora.enabled:
            raise ConfigError("a stage needs trainable modules or LoRA")
        if self.max_steps < 1 or self.grad_accum < 1:
            raise ConfigError("max_steps and grad_accum must be >= 1")


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on GPU, gloo on CPU
    config_file: str | None = None  # DeepSpeed JSON merged over the generated config ("auto" keeps ours)
    overrides: dict = field(default_factory=dict)  # merged last

    def validate(self) -> None:
        check_choices(self, "deepspeed.")


@dataclass
class CheckpointConfig:
    every: int = 0  # optimizer steps between resumable checkpoints (0: none)
    keep: int = 2  # most recent checkpoints kept per stage
    resume: str = "auto"  # auto (latest checkpoint; finished stages are skipped) | none | a checkpoint dir


@dataclass
class LogConfig:
    every: int = 10  # steps between console lines (metrics.jsonl gets every step)
    progress: bool = True  # tqdm bar on rank 0
    wandb_mode: WandbMode = "disabled"  # never logs in by itself
    wandb_project: str = "llava-ov"
    wandb_name: str | None = None
    peak_tflops: float | None = None  # per device, for MFU; None: GPU name table (n/a on CPU)
    plot: bool = True  # loss-curve PNG of all stages at the end

    def validate(self) -> None:
        check_choices(self, "log.")
        if self.every < 1:
            raise ConfigError("log.every must be >= 1")


@dataclass
class EvalConfig:
    max_new_tokens: int = 4
    batch_size: int = 32  # prompts per generate call
    max_items: int | None = None  # held-out prompts in all (None: all)


def _align() -> StageConfig:
    return StageConfig(trainable=["projector"], optim=OptimConfig(lr=1e-3), evaluate=False)


def _sft() -> StageConfig:
    return StageConfig(init_from="previous", optim=OptimConfig(lr=1e-5, lr_vision=2e-6))


@dataclass
class TrainConfig:
    output_dir: str = "outputs/lmm"
    seed: int = 0
    threads: int | None = None  # torch intra-op threads per rank (None: torch's default)
    stages: list[str] = field(default_factory=lambda: ["align", "sft"])
    align: StageConfig = field(default_factory=_align)
    sft: StageConfig = field(default_factory=_sft)
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(tower=TowerConfig(size="debug"), llm=LLMConfig(from_scratch={}))
    )
    tokenizer: str = (
        "auto"  # auto (model.llm's) | synthetic (built from the synthetic QA texts) | path / hub id
    )
    tokenizer_vocab: int = 512  # size of the synthetic tokenizer
    data_config: str = "data_configs/synthetic_motion_qa.yaml"
    data: Partial[DataConfig] = field(default_factory=dict)  # DataConfig overrides for every stage
    # The equal-budget rule: LLM visual tokens per clip → every stage's codec settings for this tower
    media: MediaConfig = field(default_factory=MediaConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def stage(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; choose from {list(STAGES)}")
        return getattr(self, name)

    def stage_data(self, name: str) -> DataConfig:
        """The :class:`DataConfig` of stage ``name``, resolved once (:func:`resolve_stage_data`) and then
        the one object every reader gets. :func:`load_train_config` resolves the stages it runs; a config
        built in Python resolves on first use. ``merge_config`` makes a new config, which resolves
        afresh (it is kept outside the dataclass fields: not a key, not saved, not compared)."""
        resolved = self.__dict__.setdefault("_stage_data", {})
        if name not in resolved:
            resolved[name] = resolve_stage_data(self, name)
        return resolved[name]

    def validate(self) -> None:
        check_choices(self)  # every section's choices, also for a config built in Python
        if not self.stages:
            raise ConfigError("stages is empty")
        for name in self.stages:
            self.stage(name)
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages must be distinct, got {self.stages}")
        try:
            self.model.validate()
            self.media.validate()
            if self.media.budget is not None:
                media_plan(self.media, tower_spec(self.model.tower), self.model.projector.merge)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def previous_stage(name: str) -> str | None:
    """The stage that precedes ``name`` in the fixed order :data:`STAGES`."""
    i = STAGES.index(name)
    return STAGES[i - 1] if i > 0 else None


def resolve_path(path: str | Path) -> Path:
    """A relative path as given (from the working directory), else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not (REPO_ROOT / p).exists():
        return p
    return REPO_ROOT / p


def resolve_stage_data(cfg: TrainConfig, name: str) -> DataConfig:
    """The stage's data config file (or the run's) ← run ``data`` ← stage ``data`` (mappings merged key
    by key) ← the codec settings of ``media`` (the budget rule) when its budget is set; every step strict
    and validated. Files and the tower are checked by :func:`llava_ov.train.build.stage_data_config`."""
    stage = cfg.stage(name)
    data = load_data_config(resolve_path(stage.data_config or cfg.data_config))
    for updates in (cfg.data, stage.data):
        data = merge_config(data, updates)
    if cfg.media.budget is not None:  # the budget rule decides the clips' frames / resolution / count
        spec = tower_spec(cfg.model.tower)
        plan = media_plan(cfg.media, spec, cfg.model.projector.merge)
        data = merge_config(data, {"codec": plan.codec_overrides(spec.patch_size)})
    return data


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, stage: str | None = None
) -> TrainConfig:
    """Defaults ← YAML ← ``key=value`` overrides, all strict. Mappings merge key by key (an override of
    ``data.max_tokens`` keeps the YAML's other ``data`` keys). ``stage`` runs that stage alone. The data
    config of each stage it runs is resolved here (:meth:`TrainConfig.stage_data`)."""
    cfg = load_config(TrainConfig, path, overrides)
    if stage is not None:
        cfg = merge_config(cfg, {"stages": [stage]})
    for name in cfg.stages:
        cfg.stage_data(name)
    return cfg


__all__ = [
    "MODULES",
    "REPO_ROOT",
    "STAGES",
    "CheckpointConfig",
    "DeepSpeedConfig",
    "EvalConfig",
    "LogConfig",
    "LoraConfig",
    "OptimConfig",
    "StageConfig",
    "TrainConfig",
    "load_train_config",
    "previous_stage",
    "resolve_path",
    "resolve_stage_data",
]
