"""Data mixtures: typed YAML configs, weighted sampling across sources, the training DataLoader.

A :class:`DataConfig` lists sources (shards, weight, media kind, codec overrides). Shard patterns
expand environment variables (``${DATA_ROOT}/llava/shard-{000000..000099}.tar``, also
``${VAR:-default}``); ``synthetic:train`` / ``synthetic:heldout`` name the shards of the embedded
synthetic motion-QA set (``DataConfig.synthetic``), generated (or found in its cache) by
:func:`prepare_data`.

Sampling: every draw picks a source with probability proportional to its weight (a seeded RNG per
rank x worker, so the mixture is deterministic for a seed) and takes that source's next sample. A
source that runs out (``repeat: false``, or ``max_samples`` draws taken) leaves the mixture; the
weights of the others renormalise. A source's ``where`` keeps only the samples whose JSON record has
the given values, so a heavy, capped slice of a set (``where: {qtype: direction}``, ``max_samples``)
comes first and then leaves: a curriculum, with no state beyond the stream positions.

Exact resume: every item knows its position in its reader's mixture stream (draws from the mixture,
skip markers included) and every packed batch carries the position where its worker's next batch
starts (``LMMBatch.next_pos``). :class:`LMMLoader` keeps, per worker, the position after the last
batch the trainer took, plus the number of batches taken (``state_dict``). A loader built with that
state (``resume=``) replays each worker's mixture draws up to its position, reading the raw samples
without decoding them, and restarts packing there; worker roles are rotated so that the DataLoader's
round-robin continues with the worker that was next. The batches that follow are the ones the
uninterrupted run would have produced.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from encoder.codec import CodecConfig
from encoder.typed_config import ConfigError, check_choices, deep_merge, load_config, merge_config
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
from llava_ov.data.samples import MediaKind, decode_sample, parse_record
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
    media_kind: MediaKind = "auto"
    codec: dict = field(default_factory=dict)  # CodecConfig overrides on top of DataConfig.codec
    # Keep only samples whose JSON record has these values ({field: value or [values]}), e.g. a
    # {qtype: direction} slice of a set; other samples are passed over (not counted as skipped).
    where: dict = field(default_factory=dict)
    # Draws after which the source leaves the mixture (per reader = rank x DataLoader worker); with a
    # high weight, a curriculum: this source first, then the others.
    max_samples: int | None = None

    def validate(self) -> None:
        check_choices(self, f"source {self.name!r}: ")
        if not self.name or not self.shards:
            raise ConfigError("every source needs a name and shards")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"source {self.name!r}: max_samples must be >= 1, got {self.max_samples}")
        if self.weight <= 0:
            raise ConfigError(f"source {self.name!r}: weight must be > 0, got {self.weight}")


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
        check_choices(self)
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
    """Strict YAML → :class:`DataConfig` (unknown keys are errors; validated)."""
    return load_config(DataConfig, path, overrides)


def codec_config(cfg: DataConfig, source: SourceConfig) -> CodecConfig:
    """The source's :class:`CodecConfig`: defaults ← ``cfg.codec`` ← ``source.codec`` (strict, validated)."""
    return merge_config(merge_config(CodecConfig(), cfg.codec), source.codec)


def prepare_data(cfg: DataConfig, progress: bool = True) -> dict[str, list[str]]:
    """Generate (or find cached) synthetic shards if the config uses them; split → shard paths."""
    uses = any(s.shards.startswith(SYNTHETIC_PREFIX) for s in cfg.sources + cfg.eval_sources)
    if not uses:
        return {}
    if cfg.synthetic is None:
        raise ConfigError("a source uses synthetic: shards but the config has no 'synthetic' section")
    out = generate_synthetic_qa(synthetic_config(cfg), progress=progress)
    return {split: [str(p) for p in paths] for split, paths in out.items()}


def synthetic_config(cfg: DataConfig) -> SyntheticQAConfig:
    """``cfg.synthetic`` as generated: with a precomputed store (npz / both) the clips are patchified
    with this data config's ``codec`` section, ``synthetic.codec`` on top, so that the patches read
    from the shards are those the loader would have made from the mp4."""
    syn = cfg.synthetic
    if syn is None or syn.store == "mp4":
        return syn
    return dataclasses.replace(syn, codec=deep_merge(cfg.codec, syn.codec))


def resolve_shards(cfg: DataConfig, source: SourceConfig) -> str | list[str]:
    if not source.shards.startswith(SYNTHETIC_PREFIX):
        return source.shards
    split = source.shards[len(SYNTHETIC_PREFIX) :]
    shards = prepare_data(cfg, progress=False)  # cached: returns instantly once generated
    if split not in shards:
        raise ConfigError(f"unknown synthetic split {split!r}; expected one of {sorted(shards)}")
    return shards[split]


def record_matches(raw: Any, where: dict[str, Any]) -> bool:
    """Whether a raw sample's JSON record has the ``where`` values. Skip markers and unparsable records
    pass, so that the decoder counts them as bad samples."""
    if isinstance(raw, Skipped) or not where:
        return True
    try:
        record = parse_record(raw.get("json"))
    except ValueError:
        return True
    return all(record.get(k) in (v if isinstance(v, list) else [v]) for k, v in where.items())


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
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.tokenizer, self.tokens_for = cfg, tokenizer, tokens_for
        self.rank, self.world_size, self.pack = rank, world_size, pack
        resume = resume or {}
        self.worker_offset = int(resume.get("batches", 0))  # rotation of worker roles (mod workers)
        self.skip = {int(k): int(v) for k, v in resume.get("positions", {}).items()}
        self.sources = list(cfg.sources if sources is None else sources)
        if not self.sources:
            raise ConfigError("the data config has no sources")
        self.shards = [resolve_shards(cfg, s) for s in self.sources]
        self.codecs = [codec_config(cfg, s) for s in self.sources]

    def logical_worker(self) -> int:
        """This DataLoader worker's role: its id rotated by the resume offset."""
        worker, workers = worker_slot()
        return (worker + self.worker_offset) % workers

    def _raw(self, i: int, worker: int) -> Iterator:
        cfg, source = self.cfg, self.sources[i]
        read = ReadConfig(
            cfg.shuffle_buffer, cfg.seed + 7919 * i, cfg.repeat, self.rank, self.world_size, worker=worker
        )
        stream = iter_raw_samples(self.shards[i], read, source.name)
        if source.where:
            stream = (raw for raw in stream if record_matches(raw, source.where))
        return itertools.islice(stream, source.max_samples)

    def _decode(self, i: int, raw: Any, pos: int) -> LMMItem | Skipped:
        source = self.sources[i]
        sample = decode_sample(raw, self.codecs[i], source.name, source.media_kind)
        fmt = ChatFormat(empty_think=self.cfg.empty_think)
        item = make_item(sample, self.tokenizer, self.tokens_for, self.cfg.max_length, fmt)
        if isinstance(item, LMMItem):
            item.stream_pos = pos
        return item

    def iter_items(self) -> Iterator:
        worker = self.logical_worker()
        rng = random.Random(f"{self.cfg.seed}/mix/{self.rank}/{worker}")
        streams = {i: self._raw(i, worker) for i in range(len(self.sources))}
        skip, pos = self.skip.get(worker, 0), 0
        while streams:
            live = sorted(streams)
            pick = live[next(weighted_choices([self.sources[i].weight for i in live], rng))]
            try:
                raw = next(streams[pick])
            except StopIteration:
                del streams[pick]
                continue
            pos += 1
            if pos > skip:  # positions below `skip` were consumed before a resume: not decoded
                yield self._decode(pick, raw, pos - 1)

    def __iter__(self) -> Iterator:
        if not self.pack:
            return self.iter_items()
        cfg = self.cfg
        collator = LMMCollator(cfg.padded, int(getattr(self.tokenizer, "pad_token_id", 0) or 0))
        worker = self.logical_worker()
        batches = pack_items(
            self.iter_items(), cfg.max_tokens, cfg.max_media_tokens, collator, cfg.max_samples
        )
        return (_tagged(b, worker) for b in batches)


def dist_slot() -> tuple[int, int]:
    """(rank, world size): torch.distributed when initialised, else RANK / WORLD_SIZE, else (0, 1)."""
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


def _tagged(batch: LMMBatch, worker: int) -> LMMBatch:
    batch.worker = worker
    return batch


class LMMLoader:
    """Iterates :class:`LMMBatch` es built in DataLoader workers; counts every batch's skip markers
    and used samples into ``self.stats`` (in the main process) and tracks the stream position of
    every worker for exact resume (:meth:`state_dict`, ``build_loader(..., resume=state)``)."""

    def __init__(self, dataset: MixtureDataset, num_workers: int = 0, prefetch_factor: int = 2) -> None:
        self.dataset = dataset
        self.stats = DataStats()
        self.num_workers = num_workers
        self.batches = dataset.worker_offset  # batches taken from the DataLoader, all runs together
        self.positions: dict[int, int] = dict(dataset.skip)
        kwargs: dict[str, Any] = {"prefetch_factor": prefetch_factor} if num_workers else {}
        self.loader = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity, **kwargs
        )

    #: Skipped samples tolerated before the first usable one (a stream of only bad samples raises).
    max_skips_without_data = 1000

    def __iter__(self) -> Iterator[LMMBatch]:
        for batch in self.loader:
            self.stats.update(batch)
            if self.stats.used == 0 and self.stats.total_skipped >= self.max_skips_without_data:
                raise RuntimeError(
                    f"no usable sample among the first {self.stats.total_skipped} read: {self.stats}"
                )
            self.batches += 1
            if batch.next_pos is not None:
                self.positions[batch.worker] = batch.next_pos
            if not batch.is_empty:
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands after the batches taken so far (JSON-able)."""
        return {
            "num_workers": self.num_workers,
            "batches": self.batches,
            "positions": {str(k): v for k, v in sorted(self.positions.items())},
        }


def check_resume(cfg: DataConfig, resume: dict[str, Any] | None) -> None:
    """A loader state (``LMMLoader.state_dict``) fits only a loader with the same number of workers."""
    if resume and int(resume.get("num_workers", cfg.num_workers)) != cfg.num_workers:
        raise ConfigError(
            f"cannot resume a data stream of {resume['num_workers']} workers with "
            f"num_workers={cfg.num_workers}"
        )


def build_loader(
    cfg: DataConfig,
    tokenizer: Any,
    tokens_for: TokensFor = patch_tokens,
    rank: int | None = None,
    world_size: int | None = None,
    split: str = "train",
    resume: dict[str, Any] | None = None,
) -> LMMLoader:
    """The packed-batch loader of ``cfg.sources`` (``split="train"``) or ``cfg.eval_sources``
    (teacher-forced, one pass). ``rank`` / ``world_size`` default to :func:`dist_slot`. ``resume``:
    a :meth:`LMMLoader.state_dict` of the same config, rank and ``num_workers`` (exact resume)."""
    if rank is None or world_size is None:
        rank, world_size = dist_slot()
    if split not in ("train", "eval"):
        raise ValueError(f"split must be train or eval, got {split!r}")
    sources = cfg.sources if split == "train" else cfg.eval_sources
    if split == "eval":
        cfg = dataclasses.replace(cfg, repeat=False, shuffle_buffer=0)
    check_resume(cfg, resume)
    ds = MixtureDataset(cfg, tokenizer, tokens_for, rank, world_size, sources, resume=resume)
    return LMMLoader(ds, cfg.num_workers, cfg.prefetch_factor)
