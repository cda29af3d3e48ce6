"""Data mixtures: typed YAML configs, weighted sampling across sources, the training DataLoader.

A :class:`DataConfig` lists sources (shards, weight, media kind, codec overrides). Shard patterns
expand environment variables (``${DATA_ROOT}/llava/shard-{000000..000099}.tar``, also
``${VAR:-default}``); ``synthetic:train`` / ``synthetic:heldout`` name the shards of the embedded
synthetic motion-QA set (``DataConfig.synthetic``), generated (or found in its cache) by
:func:`prepare_data`.

Sampling: every draw picks a source with probability proportional to its weight (a seeded RNG per
rank x worker, so the mixture is deterministic for a seed) and takes that source's next sample. A
source that runs out (``repeat: false``) leaves the mixture; the weights of the others renormalise.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from encoder.codec import CodecConfig
from encoder.config import ConfigError, load_config, merge
from llava_ov.data.dataset import (
    LMMBatch,
    LMMCollator,
    LMMItem,
    TokensFor,
    make_item,
    make_prompt_item,
    pack_items,
    patch_tokens,
)
from llava_ov.data.samples import MEDIA_KINDS, decode_sample
from llava_ov.data.shards import ReadConfig, iter_raw_samples, worker_slot
from llava_ov.data.stats import DataStats, Skipped
from llava_ov.data.synthetic_qa import SyntheticQAConfig, generate_synthetic_qa
from llava_ov.text.conversation import ChatFormat

SYNTHETIC_PREFIX = "synthetic:"


@dataclass
class SourceConfig:
    name: str = ""
    shards: str = ""  # brace pattern / glob / directory / URL; env vars expanded; "synthetic:<split>"
    weight: float = 1.0
    media_kind: str = "auto"  # auto | video | image | text
    codec: dict = field(default_factory=dict)  # CodecConfig overrides on top of DataConfig.codec

    def validate(self) -> None:
        if not self.name or not self.shards:
            raise ConfigError("every source needs a name and shards")
        if self.weight <= 0:
            raise ConfigError(f"source {self.name!r}: weight must be > 0, got {self.weight}")
        if self.media_kind not in MEDIA_KINDS:
            raise ConfigError(f"source {self.name!r}: media_kind must be one of {MEDIA_KINDS}")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    eval_sources: list[SourceConfig] = field(default_factory=list)
    codec: dict = field(default_factory=dict)  # CodecConfig overrides shared by all sources
    synthetic: SyntheticQAConfig | None = None
    max_length: int = 2048  # per sample (tokenization, media-aware truncation)
    max_tokens: int = 4096  # text tokens per packed batch
    max_media_tokens: int = 16384  # vision-tower patches per batch
    max_samples: int | None = None  # samples per packed batch (None: no limit)
    padded: bool = False  # padded text batches instead of packed
    empty_think: bool = False  # ChatFormat.empty_think
    seed: int = 0
    shuffle_buffer: int = 256
    repeat: bool = True
    num_workers: int = 2
    prefetch_factor: int = 2

    def validate(self) -> None:
        names = [s.name for s in self.sources + self.eval_sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must be unique, got {names}")
        for s in self.sources + self.eval_sources:
            s.validate()
            codec_config(self, s)  # strict check of the overrides
        if self.max_length > self.max_tokens:
            raise ConfigError(f"max_length {self.max_length} > max_tokens {self.max_tokens}")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0")


def load_data_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DataConfig:
    """Strict YAML → :class:`DataConfig` (unknown keys are errors)."""
    cfg = load_config(DataConfig, path, overrides)
    cfg.validate()
    return cfg


def codec_config(cfg: DataConfig, source: SourceConfig) -> CodecConfig:
    """The source's :class:`CodecConfig`: defaults ← ``cfg.codec`` ← ``source.codec`` (strict)."""
    codec = merge(merge(CodecConfig(), cfg.codec), source.codec)
    codec.validate()
    return codec


def prepare_data(cfg: DataConfig, progress: bool = True) -> dict[str, list[str]]:
    """Generate (or find cached) synthetic shards if the config uses them; split → shard paths."""
    uses = any(s.shards.startswith(SYNTHETIC_PREFIX) for s in cfg.sources + cfg.eval_sources)
    if not uses:
        return {}
    if cfg.synthetic is None:
        raise ConfigError("a source uses synthetic: shards but the config has no 'synthetic' section")
    out = generate_synthetic_qa(cfg.synthetic, progress=progress)
    return {split: [str(p) for p in paths] for split, paths in out.items()}


def resolve_shards(cfg: DataConfig, source: SourceConfig) -> str | list[str]:
    if not source.shards.startswith(SYNTHETIC_PREFIX):
        return source.shards
    split = source.shards[len(SYNTHETIC_PREFIX):]
    shards = prepare_data(cfg, progress=False)  # cached: returns instantly once generated
    if split not in shards:
        raise ConfigError(f"unknown synthetic split {split!r}; expected one of {sorted(shards)}")
    return shards[split]


def weighted_choices(weights: Sequence[float], rng: random.Random) -> Iterator[int]:
    """Endless source indices drawn with probability proportional to ``weights``."""
    total = float(sum(weights))
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    while True:
        u = rng.random()
        yield next((i for i, c in enumerate(cum) if u < c), len(cum) - 1)


class MixtureDataset(IterableDataset):
    """Items (or :class:`LMMBatch` es with ``pack=True``) of a weighted mixture of sources."""

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer: Any,
        tokens_for: TokensFor = patch_tokens,
        rank: int = 0,
        world_size: int = 1,
        sources: Sequence[SourceConfig] | None = None,
        pack: bool = True,
    ) -> None:
        super().__init__()
        self.cfg, self.tokenizer, self.tokens_for = cfg, tokenizer, tokens_for
        self.rank, self.world_size, self.pack = rank, world_size, pack
        self.sources = list(cfg.sources if sources is None else sources)
        if not self.sources:
            raise ConfigError("the data config has no sources")
        self.shards = [resolve_shards(cfg, s) for s in self.sources]
        self.codecs = [codec_config(cfg, s) for s in self.sources]

    def _read(self, i: int) -> Iterator:
        cfg, source = self.cfg, self.sources[i]
        read = ReadConfig(cfg.shuffle_buffer, cfg.seed + 7919 * i, cfg.repeat, self.rank, self.world_size)
        fmt = ChatFormat(empty_think=cfg.empty_think)
        for raw in iter_raw_samples(self.shards[i], read, source.name):
            sample = decode_sample(raw, self.codecs[i], source.name, source.media_kind)
            yield make_item(sample, self.tokenizer, self.tokens_for, cfg.max_length, fmt)

    def iter_items(self) -> Iterator:
        worker, _ = worker_slot()
        rng = random.Random(f"{self.cfg.seed}/mix/{self.rank}/{worker}")
        streams = {i: self._read(i) for i in range(len(self.sources))}
        while streams:
            live = sorted(streams)
            pick = live[next(weighted_choices([self.sources[i].weight for i in live], rng))]
            try:
                yield next(streams[pick])
            except StopIteration:
                del streams[pick]

    def __iter__(self) -> Iterator:
        if not self.pack:
            return self.iter_items()
        cfg = self.cfg
        collator = LMMCollator(cfg.padded, int(getattr(self.tokenizer, "pad_token_id", 0) or 0))
        return pack_items(self.iter_items(), cfg.max_tokens, cfg.max_media_tokens, collator, cfg.max_samples)


def dist_slot() -> tuple[int, int]:
    """(rank, world size): torch.distributed when initialised, else RANK / WORLD_SIZE, else (0, 1)."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def eval_items(
    cfg: DataConfig,
    tokenizer: Any,
    tokens_for: TokensFor = patch_tokens,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterator[LMMItem | Skipped]:
    """Generation prompts of ``cfg.eval_sources`` (one pass, in order, this rank's share): items from
    :func:`make_prompt_item`, reference answer in ``item.meta["answer"]`` (and ``qtype`` if any)."""
    if rank is None or world_size is None:
        rank, world_size = dist_slot()
    fmt = ChatFormat(empty_think=cfg.empty_think)
    for source in cfg.eval_sources:
        read = ReadConfig(0, cfg.seed, False, rank, world_size, shuffle_shards=False)
        codec = codec_config(cfg, source)
        for raw in iter_raw_samples(resolve_shards(cfg, source), read, source.name):
            sample = decode_sample(raw, codec, source.name, source.media_kind)
            if isinstance(sample, Skipped):
                yield sample
                continue
            try:
                yield make_prompt_item(sample, tokenizer, tokens_for, fmt)
            except ValueError as e:
                yield Skipped(sample.key, "bad_sample", str(e)[:300], source.name)


def _identity(batch: Any) -> Any:
    return batch


class LMMLoader:
    """Iterates :class:`LMMBatch` es built in DataLoader workers; counts every batch's skip markers
    and used samples into ``self.stats`` (in the main process)."""

    def __init__(self, dataset: MixtureDataset, num_workers: int = 0, prefetch_factor: int = 2) -> None:
        self.dataset = dataset
        self.stats = DataStats()
        kwargs: dict[str, Any] = {"prefetch_factor": prefetch_factor} if num_workers else {}
        self.loader = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity, **kwargs
        )

    def __iter__(self) -> Iterator[LMMBatch]:
        for batch in self.loader:
            self.stats.update(batch)
            if not batch.is_empty:
                yield batch


def build_loader(
    cfg: DataConfig,
    tokenizer: Any,
    tokens_for: TokensFor = patch_tokens,
    rank: int | None = None,
    world_size: int | None = None,
    split: str = "train",
) -> LMMLoader:
    """The packed-batch loader of ``cfg.sources`` (``split="train"``) or ``cfg.eval_sources``
    (teacher-forced, one pass). ``rank`` / ``world_size`` default to :func:`dist_slot`."""
    if rank is None or world_size is None:
        rank, world_size = dist_slot()
    if split not in ("train", "eval"):
        raise ValueError(f"split must be train or eval, got {split!r}")
    sources = cfg.sources if split == "train" else cfg.eval_sources
    if split == "eval":
        cfg = dataclasses.replace(cfg, repeat=False, shuffle_buffer=0)
    ds = MixtureDataset(cfg, tokenizer, tokens_for, rank, world_size, sources)
    return LMMLoader(ds, cfg.num_workers, cfg.prefetch_factor)
