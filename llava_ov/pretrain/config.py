"""Typed configuration of an encoder pretraining run (``deepspeed scripts/pretrain_encoder.py``).

Sections: ``encoder`` (the OV-Encoder preset / overrides, or an export to continue from), ``heads``
(one partial-FC head per data kind, each with its own concept bank, loss weight and learning rate),
``data_config`` + ``data`` (a :class:`llava_ov.data.DataConfig`: sources, codec, shuffling, workers),
``mix`` (the input modes of video samples), ``pretrain`` (steps, accumulation, AdamW + schedule),
and the trainer's shared ``deepspeed`` / ``checkpoint`` / ``log`` sections. Loaded strictly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from encoder.cli import check_local_path
from encoder.model import get_config
from encoder.pretrain.kmeans import Backend, KMeansConfig
from encoder.typed_config import (
    ConfigError,
    Partial,
    check_choices,
    load_config,
    merge_config,
    optional_section,
)
from llava_ov.data import DataConfig
from llava_ov.experiments.probe.config import TASK_CLASSES, ProbeConfig
from llava_ov.pretrain.features import TeacherConfig, TeacherKind
from llava_ov.train.config import CheckpointConfig, DeepSpeedConfig, LogConfig, OptimConfig


@dataclass
class BankBuildConfig:
    """How a head's missing bank is built before training (scripts/build_concept_bank.py's settings):
    the teacher (:class:`llava_ov.pretrain.features.TeacherConfig`) and the k-means
    (:class:`encoder.pretrain.kmeans.KMeansConfig`)."""

    teacher: TeacherKind = "pixels"
    teacher_path: str | None = None  # ov_encoder / tower: weights folder or hub id; npy: the .npy file
    tower: str = "siglip2"  # teacher tower: its name in llava_ov.model.towers
    keys: str | None = None  # teacher npy: one sample key per line, in row order
    frames: int = 8
    input_size: int = 112
    pool: int = 4
    centre: bool = False
    bins: int = 8  # motion teacher: direction bins
    segments: int = 4  # motion teacher: time segments
    centres: int = 64
    topk: int = 10
    iters: int = 20
    redo: int = 1
    backend: Backend = "auto"
    seed: int = 0

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(
            kind=self.teacher,
            path=self.teacher_path,
            tower=self.tower,
            keys=self.keys,
            frames=self.frames,
            input_size=self.input_size,
            pool=self.pool,
            centre=self.centre,
            bins=self.bins,
            segments=self.segments,
        )

    def kmeans_config(self) -> KMeansConfig:
        return KMeansConfig(
            num_centres=self.centres,
            topk=self.topk,
            iters=self.iters,
            redo=self.redo,
            backend=self.backend,
            seed=self.seed,
        )


BUILD_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BankBuildConfig))


@dataclass
class HeadConfig:
    """One partial-FC head: a bank, the sources it serves, its loss weight and LR."""

    bank: str = ""  # concept bank folder (scripts/build_concept_bank.py)
    sources: list[str] = field(default_factory=list)  # data sources it serves ([]: every source)
    weight: float = 1.0  # loss weight (losses of all heads are weighted and summed)
    lr: float | None = None  # peak LR of its centres (None: pretrain.optim.lr)
    weight_decay: float = 0.0
    sample_rate: float = 0.1  # fraction of each rank's centres scored per step (positives always)
    num_labels: int = 8  # stored labels drawn per sample and step
    scale: float = 64.0
    margin: float = 0.3
    grad_clip: float = 5.0  # on the head's own (sharded) centres; 0: none
    # When ``bank`` does not exist yet: build it before training from the sources this head serves;
    # None ({} in YAML) = the bank must exist.
    build: BankBuildConfig | None = optional_section()

    def __post_init__(self) -> None:
        if isinstance(build := self.build, dict):  # a mapping given in Python: read strictly ({}: None)
            self.build = (
                merge_config(BankBuildConfig(), build, prefix="heads.<name>.build.") if build else None
            )

    def validate(self) -> None:
        check_choices(self, "heads.<name>.")
        if not self.bank:
            raise ConfigError("every head needs a bank folder (heads.<name>.bank)")
        if self.weight <= 0 or not 0 < self.sample_rate <= 1 or self.num_labels < 1:
            raise ConfigError("a head needs weight > 0, 0 < sample_rate <= 1 and num_labels >= 1")


@dataclass
class MixConfig:
    """Input modes of a video sample, drawn per sample and step with these shares (images: image mode)."""

    codec: float = 0.5
    frames: float = 0.375
    collage: float = 0.125

    def validate(self) -> None:
        shares = (self.codec, self.frames, self.collage)
        if min(shares) < 0 or sum(shares) <= 0:
            raise ConfigError(f"mix shares must be >= 0 and not all 0, got {shares}")

    def modes(self) -> tuple[list[str], list[float]]:
        pairs = [
            (m, s)
            for m, s in (("codec", self.codec), ("frames", self.frames), ("collage", self.collage))
            if s > 0
        ]
        return [m for m, _ in pairs], [s for _, s in pairs]


@dataclass
class EncoderSection:
    size: str = "debug"  # OV-Encoder preset (encoder.model.PRESETS)
    overrides: dict = field(default_factory=dict)  # ViTConfig overrides
    init_from: str | None = None  # an encoder export to continue from (folder / hub id)

    def validate(self) -> None:
        """A known preset with valid overrides, and an existing ``init_from`` folder (when local)."""
        try:
            get_config(self.size, **self.overrides)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"encoder.size={self.size!r} / encoder.overrides: {e}") from None
        check_local_path(self.init_from, "encoder.init_from")


@dataclass
class PretrainStage:
    max_steps: int = 300
    grad_accum: int = 1
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.05, grad_clip=5.0))

    def validate(self) -> None:
        if self.max_steps < 1 or self.grad_accum < 1:
            raise ConfigError("pretrain.max_steps and pretrain.grad_accum must be >= 1")
        self.optim.validate()


@dataclass
class ProbeSection:
    """After training: an attentive probe of the export vs the same encoder at random init."""

    enabled: bool = True
    # settings of the probe (any ProbeConfig key, e.g. {epochs: 30, media: {budget: 256}}; checked strictly)
    config: Partial[ProbeConfig] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=lambda: ["direction", "color"])  # synthetic probe tasks

    def validate(self) -> None:
        if not self.tasks or set(self.tasks) - set(TASK_CLASSES):
            raise ConfigError(
                f"probe.tasks must be a non-empty list of {list(TASK_CLASSES)}, got {self.tasks}"
            )


@dataclass
class PretrainConfig:
    output_dir: str = "outputs/pretrain"
    seed: int = 0
    threads: int | None = None
    encoder: EncoderSection = field(default_factory=EncoderSection)
    heads: dict[str, HeadConfig] = field(default_factory=dict)  # one head per data kind, by name
    data_config: str = "data_configs/synthetic_motion_qa.yaml"
    data: Partial[DataConfig] = field(default_factory=dict)  # on top of data_config
    mix: MixConfig = field(default_factory=MixConfig)
    pretrain: PretrainStage = field(default_factory=PretrainStage)
    deepspeed: DeepSpeedConfig = field(default_factory=lambda: DeepSpeedConfig(zero_stage=1))
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    probe: ProbeSection = field(default_factory=ProbeSection)

    def __post_init__(self) -> None:
        """Heads given in Python as mappings (``replace(cfg, heads={...})``) are read strictly as
        :class:`HeadConfig` (the YAML / CLI path does the same through the loader)."""
        self.heads = {
            name: h if isinstance(h, HeadConfig) else merge_config(HeadConfig(), h, prefix=f"heads.{name}.")
            for name, h in self.heads.items()
        }

    def validate(self) -> None:
        check_choices(self)
        if not self.heads:
            raise ConfigError("heads is empty: pretraining needs at least one head with a concept bank")
        heads = self.heads
        for head in heads.values():
            head.validate()
        served = [s for h in heads.values() for s in h.sources]
        if len(served) != len(set(served)):
            raise ConfigError(f"a source is served by two heads: {served}")
        if sum(not h.sources for h in heads.values()) > 1:
            raise ConfigError("at most one head may serve every remaining source (sources: [])")
        if self.deepspeed.zero_stage not in (0, 1, 2):
            raise ConfigError(
                "encoder pretraining runs ZeRO-0/1/2 (the partial-FC centres are sharded by the task)"
            )
        self.pretrain.validate()
        self.mix.validate()
        self.encoder.validate()
        self.probe.validate()
        for name, head in heads.items():
            if not head.build:  # a bank built before training may not exist yet
                check_local_path(head.bank, f"heads.{name}.bank", "concept bank folder")


def load_pretrain_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PretrainConfig:
    """Defaults ← YAML ← ``key=value`` overrides, all strict and validated."""
    return load_config(PretrainConfig, path, overrides)


__all__ = [
    "BUILD_KEYS",
    "BankBuildConfig",
    "EncoderSection",
    "HeadConfig",
    "MixConfig",
    "PretrainConfig",
    "PretrainStage",
    "ProbeSection",
    "load_pretrain_config",
]
