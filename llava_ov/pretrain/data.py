"""Pretraining batches: samples of the data mixture as packed patch selections + their concept labels.

The mixture, the sharding over ranks and DataLoader workers, skip counting and exact resume are those
of the LMM data (:class:`llava_ov.data.mixture.MixtureDataset`, :class:`LMMLoader`); only the decoding
and the batching differ. A video sample is patchified in one of the ``mix`` modes (codec / frames /
collage), drawn from a seeded RNG of (seed, rank, worker, stream position), so a resumed stream gets
the same modes; an image uses the image mode. Its labels are the stored top-k centres of its key in
the bank of the head that serves its source. A sample that does not decode is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from encoder.codec import CodecConfig, PatchSelection
from encoder.model import PackedInput, pack_selections
from encoder.pretrain.bank import ConceptBank
from encoder.typed_config import ConfigError
from llava_ov.data.dataset import StreamBatch, pack_items
from llava_ov.data.mixture import DataConfig, LMMLoader, MixtureDataset, check_resume, resolve_shards
from llava_ov.data.samples import decode_media
from llava_ov.data.shards import VIDEO_EXTS, ReadConfig, iter_raw_samples, media_fields
from llava_ov.data.stats import Skipped
from llava_ov.pretrain.config import MixConfig


@dataclass
class PretrainItem:
    key: str
    source: str
    selection: PatchSelection
    head: int
    labels: np.ndarray  # int64 [L] (-1 pads)
    mode: str
    stream_pos: int = 0

    @property
    def num_patches(self) -> int:
        return len(self.selection)

    def __len__(self) -> int:  # one "token" per sample: the packer's max_tokens is the batch size
        return 1


@dataclass
class PretrainBatch(StreamBatch):
    packed: PackedInput | None
    heads: torch.Tensor  # int64 [B]
    labels: torch.Tensor  # int64 [B, L] (-1 pads)
    keys: list[str]
    modes: list[str]

    @property
    def num_patches(self) -> int:
        return 0 if self.packed is None else int(self.packed.pixels.shape[0])


def collate(items: list[Any]) -> PretrainBatch:
    good = [it for it in items if isinstance(it, PretrainItem)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not good:
        return PretrainBatch(
            None,
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, 1, dtype=torch.long),
            [],
            [],
            skipped=skipped,
        )
    width = max(len(it.labels) for it in good)
    labels = torch.full((len(good), width), -1, dtype=torch.long)
    for i, it in enumerate(good):
        labels[i, : len(it.labels)] = torch.from_numpy(it.labels)
    return PretrainBatch(
        pack_selections([it.selection for it in good]),
        torch.tensor([it.head for it in good]),
        labels,
        [it.key for it in good],
        [it.mode for it in good],
        skipped=skipped,
    )


class PretrainDataset(MixtureDataset):
    """Items of the mixture decoded for pretraining, packed into :class:`PretrainBatch` es of at most
    ``batch_size`` samples and ``max_media_tokens`` patches."""

    def __init__(
        self,
        cfg: DataConfig,
        banks: list[ConceptBank],
        head_of_source: list[int],
        mix: MixConfig,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(cfg, None, rank=rank, world_size=world_size, resume=resume)
        self.banks, self.head_of_source, self.mix, self.batch_size = banks, head_of_source, mix, batch_size
        self.modes, self.shares = mix.modes()

    def mode_codec(self, i: int, mode: str) -> CodecConfig:
        base = self.codecs[i]
        return base if base.mode == mode else dataclasses.replace(base, mode=mode)

    def _decode(self, i: int, raw: Any, pos: int) -> PretrainItem | Skipped:
        source = self.sources[i]
        if isinstance(raw, Skipped):
            return raw
        key = str(raw.get("__key__", "?"))
        fields = [f for f in raw if f.rsplit(".", 1)[-1].lower() in VIDEO_EXTS] or media_fields(raw)
        if not fields:
            return Skipped(key, "missing_media", "no media field", source.name)
        name = fields[0]
        ext = name.rsplit(".", 1)[-1].lower()
        if ext in VIDEO_EXTS:
            rng = random.Random(f"{self.cfg.seed}/mode/{self.rank}/{self.logical_worker()}/{pos}")
            mode = rng.choices(self.modes, self.shares)[0]
        else:
            mode = "image" if ext != "npz" else "precomputed"
        try:
            sel = decode_media(
                name, raw[name], self.mode_codec(i, mode) if mode != "precomputed" else self.codecs[i]
            )
        except Exception as e:  # noqa: BLE001 - a bad sample is skipped and counted, the run goes on
            return Skipped(key, "corrupt_media", f"{type(e).__name__}: {e}"[:300], source.name)
        if len(sel) == 0:
            return Skipped(key, "corrupt_media", "no patches", source.name)
        head = self.head_of_source[i]
        bank = self.banks[head]
        if key not in bank:
            return Skipped(key, "bad_sample", f"no labels in the concept bank {bank.root}", source.name)
        return PretrainItem(key, source.name, sel, head, bank.labels_for(key), mode, pos)

    def __iter__(self):
        worker = self.logical_worker()
        limit = self.cfg.max_media_tokens
        for batch in pack_items(self.iter_items(), self.batch_size, limit, collate, self.batch_size):
            batch.worker = worker
            yield batch


def check_banks(
    cfg: DataConfig, banks: list[ConceptBank], head_of_source: list[int], per_source: int = 64
) -> None:
    """Before any step: the first samples of every source have labels in their head's bank (a bank
    built for other data fails here, once, clearly)."""
    for i, source in enumerate(cfg.sources):
        keys = []
        for raw in iter_raw_samples(
            resolve_shards(cfg, source), ReadConfig(shuffle_shards=False), source.name
        ):
            if not isinstance(raw, Skipped):
                keys.append(str(raw["__key__"]))
            if len(keys) >= per_source:
                break
        if not keys:
            raise ConfigError(f"source {source.name!r} has no readable sample")
        banks[head_of_source[i]].check_keys(keys)


def build_pretrain_loader(
    cfg: DataConfig,
    banks: list[ConceptBank],
    head_of_source: list[int],
    mix: MixConfig,
    batch_size: int,
    rank: int,
    world_size: int,
    resume: dict[str, Any] | None = None,
) -> LMMLoader:
    check_resume(cfg, resume)
    ds = PretrainDataset(cfg, banks, head_of_source, mix, batch_size, rank, world_size, resume)
    return LMMLoader(ds, cfg.num_workers, cfg.prefetch_factor)


__all__ = [
    "PretrainBatch",
    "PretrainDataset",
    "PretrainItem",
    "build_pretrain_loader",
    "check_banks",
    "collate",
]
