"""Typed configuration of the attentive probe (strict ``key=value`` overrides via
:mod:`encoder.typed_config`).

The embedded default: the random-init OV-Encoder ``debug`` tower, ``media.mode=auto`` (codec for towers
that take it, else uniformly sampled frames), a budget of 512 LLM visual tokens per clip over the 16
frames of a 112-px clip, and the synthetic motion classes (the direction of a mover: left / right / up
/ down, chance 0.25; :class:`SyntheticProbeConfig`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from encoder.typed_config import ConfigError
from llava_ov.data.synthetic_scenes import COLORS, DIRECTIONS
from llava_ov.model.budget import MediaConfig, media_plan
from llava_ov.model.config import TowerConfig
from llava_ov.model.towers import tower_spec

DATA_SOURCES = ("synthetic", "folder", "shards")
SPLITS = ("train", "heldout")
POS_EMBEDS = ("none", "sincos3d")
DEVICES = ("auto", "cpu", "cuda")
FEATURE_DTYPES = ("float32", "float16", "bfloat16")
#: Settings a tower needs that differ from :class:`TowerConfig`'s defaults (applied by :func:`with_tower`).
TOWER_DEFAULTS: dict[str, dict] = {"qwen3_vit": {"output_layer": -1}}


#: The synthetic probe tasks and their classes (``direction``: the mover's direction; ``color``: its colour).
TASK_CLASSES: dict[str, tuple[str, ...]] = {"direction": tuple(DIRECTIONS), "color": tuple(COLORS)}


def task_classes(task: str) -> list[str]:
    """The classes of a synthetic probe task (:data:`TASK_CLASSES`)."""
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown synthetic probe task {task!r}; expected one of {sorted(TASK_CLASSES)}")
    return list(TASK_CLASSES[task])


@dataclass
class SyntheticProbeConfig:
    """The embedded synthetic classes, written once as folder-per-class mp4s under ``out_dir``.

    ``task``: ``direction`` (one mover crosses the frame left / right / up / down from a start where a
    move of its length fits either way, so a single frame does not give the class; half the clips add
    a static distractor) or ``color`` (one static object whose colour is the class: a single-frame,
    appearance task). ``classes`` restricts the task's classes (``[]`` = all). Clip ``i`` of a split has
    class ``classes[i % C]`` and draws everything else from ``numpy.random.default_rng([seed, i])``
    (train and held-out use different seeds)."""

    out_dir: str = "${LLAVA_OV_CACHE:-.cache/llava_ov}/probe_motion"
    task: str = "direction"
    classes: list[str] = field(default_factory=list)
    num_train: int = 256  # clips per class
    num_heldout: int = 64  # clips per class
    size: int = 112  # frame side (pixels, even)
    num_frames: int = 16
    fps: float = 8.0
    crf: float = 18.0
    object_size: float = 0.22
    travel: float = 0.45  # of the free range (<= 0.5: a direction-neutral start)
    seed: int = 0
    heldout_seed: int = 1_000_003

    def validate(self) -> None:
        names = task_classes(self.task)  # raises on an unknown task
        if bad := sorted(set(self.classes) - set(names)):
            raise ConfigError(f"synthetic.classes {bad} are not classes of task {self.task!r}: {names}")
        if len(self.class_names) < 2:
            raise ConfigError("synthetic: a probe needs at least two classes")
        if self.num_train < 1 or self.num_heldout < 1:
            raise ConfigError("synthetic.num_train and num_heldout must be >= 1 (clips per class)")
        if self.size % 2 or self.size < 32:
            raise ConfigError(f"synthetic.size must be even and >= 32, got {self.size}")
        if self.num_frames < 2:
            raise ConfigError(f"synthetic.num_frames must be >= 2, got {self.num_frames}")
        if not 0.0 < self.travel <= 0.5:
            raise ConfigError(f"synthetic.travel must be in (0, 0.5], got {self.travel}")

    @property
    def class_names(self) -> list[str]:
        names = task_classes(self.task)
        return [c for c in names if c in self.classes] if self.classes else names


@dataclass
class ProbeDataConfig:
    """Where the clips come from.

    * ``synthetic``: the embedded classes (:class:`SyntheticProbeConfig`), generated on first use;
    * ``folder``: ``root/<split>/<class_name>/*.mp4`` (any video suffix) for the splits ``train`` and
      ``heldout``; the classes are the folders of ``train``;
    * ``shards``: webdataset shards ``shards`` (brace pattern, glob or directory); a sample is
      ``{key}.mp4`` (any video suffix) + ``{key}.json`` whose ``label`` (or ``class``) field is the class
      name (numbers are read as names). The split: ``{split}`` in the pattern is replaced by ``train`` /
      ``heldout``; without it, the JSON's ``split`` field (``train``, or ``heldout`` / ``val`` /
      ``test``), else a stable hash of the key puts ``heldout_fraction`` of the samples in held-out.

    ``classes`` fixes the class list and order (clips of other classes are skipped); ``[]`` = every class
    of the train split, sorted (numerically when all names are numbers)."""

    source: str = "synthetic"
    root: str | None = None
    shards: str | None = None
    classes: list[str] = field(default_factory=list)
    max_per_class: int | None = None  # first N clips of each class per split (sorted order)
    heldout_fraction: float = 0.2

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ConfigError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
        if self.source == "folder" and not self.root:
            raise ConfigError("data.source=folder needs data.root (ROOT/<split>/<class>/*.mp4)")
        if self.source == "shards" and not self.shards:
            raise ConfigError("data.source=shards needs data.shards (a shard pattern)")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"data.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ConfigError(f"data.max_per_class must be >= 1, got {self.max_per_class}")


def _default_media() -> MediaConfig:
    return MediaConfig(budget=512, mode="auto", clip_frames=16, input_size=112)


@dataclass
class ProbeConfig:
    """One probe run: a frozen tower, a budget rule, a labelled clip set, the probe's training."""

    name: str = ""  # output folder name ("" = "<tower>-<mode>-<budget>")
    tower: TowerConfig = field(default_factory=TowerConfig)  # ov_encoder, size debug, random init
    media: MediaConfig = field(default_factory=_default_media)
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    synthetic: SyntheticProbeConfig = field(default_factory=SyntheticProbeConfig)
    heads: int = 4  # attention heads of the pooling (must divide the tower's width)
    # none | sincos3d: add each token's (t, h, w) sin-cos embedding in the probe; the probe then also reads
    # where / when the tokens are (for codec input: which patches were picked), not only the tower's features
    pos_embed: str = "none"
    epochs: int = 60
    steps: int | None = None  # optimizer steps (overrides epochs)
    batch_size: int = 32  # clips per step
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.1  # fraction of the steps (linear warmup, then cosine decay)
    extract_batch: int = 8  # clips per frozen-tower forward
    feature_dtype: str = "float32"  # the cached tower tokens (float16 / bfloat16 halve the memory)
    seed: int = 0
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    threads: int = 1  # torch intra-op threads during the run (0 = leave; 1 suits tiny towers on shared cores)
    output_dir: str = "outputs/probe"
    progress: bool = True

    def validate(self) -> None:
        if self.pos_embed not in POS_EMBEDS:
            raise ConfigError(f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ConfigError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {self.feature_dtype!r}")
        for key in ("heads", "epochs", "batch_size", "extract_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0.0 <= self.warmup < 1.0:
            raise ConfigError("lr must be > 0, weight_decay >= 0 and warmup in [0, 1)")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        self.media.validate()
        if self.media.budget is None:
            raise ConfigError("media.budget must be set (LLM visual tokens per clip)")

        try:
            media_plan(self.media, tower_spec(self.tower))
        except ValueError as e:
            raise ConfigError(f"media does not fit tower {self.tower.name!r}: {e}") from None

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name

        mode = media_plan(self.media, tower_spec(self.tower)).mode
        return f"{self.tower.name}-{mode}-{self.media.budget}"


def with_tower(cfg: ProbeConfig, name: str) -> ProbeConfig:
    """``cfg`` with another tower (its :data:`TOWER_DEFAULTS` applied; path and options reset)."""
    tower = dataclasses.replace(TowerConfig(), name=name, size=cfg.tower.size, **TOWER_DEFAULTS.get(name, {}))
    tower.validate()
    return dataclasses.replace(cfg, tower=tower)


__all__ = [
    "DATA_SOURCES",
    "DEVICES",
    "FEATURE_DTYPES",
    "POS_EMBEDS",
    "SPLITS",
    "TOWER_DEFAULTS",
    "ProbeConfig",
    "ProbeDataConfig",
    "SyntheticProbeConfig",
    "with_tower",
]
