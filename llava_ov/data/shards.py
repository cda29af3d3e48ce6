"""WebDataset shards: writing them, and reading them back as a seeded, split, repeatable stream.

A sample is one tar group ``{key}.json`` (the conversation, LLaVA or OpenAI style, plus any extra
fields) and its media: ``{key}.mp4`` (any video suffix), ``{key}.jpg`` / ``.png`` (any image
suffix) or ``{key}.npz`` (a precomputed :class:`PatchSelection`). Several media items are numbered
``{key}.0.jpg``, ``{key}.1.mp4``, ... (in placeholder order). Keys contain no dots (webdataset
splits the key from the field at the first dot of the file name), :func:`sanitize_key` enforces it.

Reading (:func:`iter_raw_samples`) yields raw dicts (``__key__``, ``__url__``, field → bytes) or
:class:`Skipped` markers for unreadable shards. Shards come from local paths (brace patterns
``shard-{000000..000009}.tar``, globs, directories) or any URL webdataset opens (``pipe:``,
``http://``...). The stream is split across nodes (rank / world size) and DataLoader workers: by
shard when there are at least as many shards as readers, else by sample (every reader reads all
shards and keeps every n-th sample); either way the readers' samples are disjoint and together
complete for each epoch.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import torch
import webdataset as wds
from torch.utils.data import get_worker_info
from webdataset.tariterators import tarfile_samples

from llava_ov.data.stats import Skipped

VIDEO_EXTS = frozenset({"mp4", "mkv", "webm", "avi", "mov", "m4v", "ts", "mpg", "mpeg", "flv", "3gp", "wmv"})
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"})
NPZ_EXT = "npz"
MEDIA_EXTS = VIDEO_EXTS | IMAGE_EXTS | {NPZ_EXT}
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # pipe:, http://, s3://, gs://, file: ...
_ENV_DEFAULT_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")
_BAD_KEY_RE = re.compile(r"[^A-Za-z0-9_\-]+")


# ----------------------------------------------------------------------------- names and patterns


def sanitize_key(key: str) -> str:
    """A webdataset-safe key: no dots, slashes or spaces (replaced by ``_``)."""
    out = _BAD_KEY_RE.sub("_", str(key)).strip("_")
    if not out:
        raise ValueError(f"sample key {key!r} has no usable characters")
    return out


def expand_env(text: str) -> str:
    """``$VAR`` / ``${VAR}`` from the environment, plus ``${VAR:-default}``; unset plain vars raise."""
    text = _ENV_DEFAULT_RE.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), text)
    expanded = os.path.expandvars(text)
    if leftover := re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded):
        raise ValueError(f"environment variable(s) {sorted(set(leftover))} not set in {text!r}")
    return expanded


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard URLs of ``spec``: env vars expanded, braces expanded; local globs and directories listed."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in specs:
        for url in braceexpand.braceexpand(expand_env(item)):
            if _URL_RE.match(url) and not url.startswith("file:"):
                urls.append(url)
                continue
            path = url.removeprefix("file:")
            if os.path.isdir(path):
                urls += sorted(glob.glob(os.path.join(path, "*.tar")))
            elif any(c in path for c in "*?["):
                urls += sorted(glob.glob(path))
            else:
                urls.append(path)
    if not urls:
        raise ValueError(f"no shards match {spec!r}")
    return urls


def missing_local_shards(spec: str | Sequence[str]) -> list[str]:
    """The local shard files of ``spec`` that do not exist (remote URLs are not checked); ValueError
    when the spec matches nothing at all."""
    return [
        u
        for u in expand_shards(spec)
        if not (_URL_RE.match(u) and not u.startswith("file:"))
        and not os.path.exists(u.removeprefix("file:"))
    ]


def shard_pattern(paths: Sequence[str | Path]) -> str:
    """A brace pattern for ``prefix-000000.tar`` ... ``prefix-00000N.tar`` (the writer's naming)."""
    paths = [str(p) for p in paths]
    m = [re.match(r"^(.*-)(\d+)(\.tar)$", p) for p in paths]
    if not paths or not all(m) or len({x.group(1) for x in m}) != 1:
        raise ValueError("paths do not follow the prefix-NNNNNN.tar naming")
    nums = [x.group(2) for x in m]
    return f"{m[0].group(1)}{{{nums[0]}..{nums[-1]}}}.tar" if len(nums) > 1 else paths[0]


def media_field(ext: str, index: int, count: int) -> str:
    """Field name of media item ``index`` of ``count``: ``mp4`` alone, ``0.mp4`` when several."""
    ext = ext.lower().lstrip(".")
    if ext not in MEDIA_EXTS:
        raise ValueError(f"unsupported media suffix {ext!r}")
    return ext if count == 1 else f"{index}.{ext}"


def media_fields(raw: dict[str, Any]) -> list[str]:
    """Media fields of a raw sample, in media order (``mp4`` or ``0.jpg``, ``1.mp4``, ...).

    A slot holding both a precomputed ``npz`` and the media file (``mp4`` + ``npz``) uses the npz.
    """
    slots: dict[int, str] = {}
    for name in raw:
        if name.startswith("__") or name.rsplit(".", 1)[-1].lower() not in MEDIA_EXTS:
            continue
        head = name.rsplit(".", 1)[0] if "." in name else ""
        slot = int(head) if head.isdigit() else -1
        if slot not in slots or name.lower().endswith(NPZ_EXT):
            slots[slot] = name
    return [slots[k] for k in sorted(slots)]


# ----------------------------------------------------------------------------- writing


def init_worker_process() -> None:
    """Initializer for process pools that write shards: one torch thread per process."""
    torch.set_num_threads(1)


class ShardWriter:
    """Write samples to ``{out_dir}/{prefix}-NNNNNN.tar``, at most ``max_samples`` per shard.

    Each shard is written under a temporary name and renamed when complete; an exception inside the
    ``with`` block drops the shard in progress, so a failure never leaves a partial shard. ``paths``
    lists the finished shards. Use as a context manager.
    """

    def __init__(self, out_dir: str | Path, prefix: str = "shard", max_samples: int = 1000) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_samples = prefix, max_samples
        self.paths: list[Path] = []
        self.count = 0
        self._keys: set[str] = set()
        self._tar = None
        self._in_shard = 0

    def _open_next(self) -> None:
        self._close_current()
        path = self.out_dir / f"{self.prefix}-{len(self.paths):06d}.tar"
        self._current = path
        self._tar = wds.TarWriter(str(path) + ".tmp", mtime=0.0, encoder=False)
        self._in_shard = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(str(self._current) + ".tmp", self._current)
            self.paths.append(self._current)
            self._tar = None

    def write(
        self,
        key: str,
        sample: dict[str, Any] | bytes,
        media: Sequence[tuple[str, bytes]] = (),
        npz: Sequence[bytes] = (),
    ) -> str:
        """Add one sample: its JSON (a dict, or bytes already encoded) and ``(suffix, bytes)`` media.

        ``npz``: precomputed selections stored *next to* the media of the same slot (readers prefer
        them); without ``media`` they are the media. Returns the (sanitized) key; duplicate keys raise.
        """
        key = sanitize_key(key)
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        if media and npz and len(npz) != len(media):
            raise ValueError(f"{len(npz)} npz for {len(media)} media items")
        self._keys.add(key)
        record: dict[str, Any] = {"__key__": key}
        record["json"] = (
            sample if isinstance(sample, bytes) else json.dumps(sample, ensure_ascii=False).encode()
        )
        count = max(len(media), len(npz))
        for i, (ext, data) in enumerate(media):
            record[media_field(ext, i, count)] = bytes(data)
        for i, data in enumerate(npz):
            record[media_field(NPZ_EXT, i, count)] = bytes(data)
        if self._tar is None or self._in_shard >= self.max_samples:
            self._open_next()
        self._tar.write(record)
        self._in_shard += 1
        self.count += 1
        return key

    def close(self) -> list[Path]:
        self._close_current()
        return self.paths

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); the finished shards stay."""
        if self._tar is not None:
            self._tar.close()
            Path(str(self._current) + ".tmp").unlink(missing_ok=True)
            self._tar = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Complete shards only: on an exception the shard in progress is dropped, never renamed."""
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ReadConfig:
    """How one shard list is read (see the module docstring)."""

    shuffle_buffer: int = 0  # samples; 0 keeps shard order
    seed: int = 0
    repeat: bool = False  # endless epochs (shards reshuffled every epoch)
    rank: int = 0
    world_size: int = 1
    split: str = "auto"  # "shard" | "sample" | "auto"
    shuffle_shards: bool = True
    worker: int | None = None  # this reader's DataLoader worker index (None: the actual worker id)


def worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker, (0, 1) outside workers."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def reader_slot(cfg: ReadConfig) -> tuple[int, int]:
    """(index, count) of this reader among all ranks x workers."""
    if not 0 <= cfg.rank < cfg.world_size:
        raise ValueError(f"rank {cfg.rank} outside world_size {cfg.world_size}")
    worker, workers = worker_slot()
    if cfg.worker is not None:
        worker = cfg.worker
    return cfg.rank * workers + worker, cfg.world_size * workers


def _shuffled(stream: Iterator, bufsize: int, rng: random.Random) -> Iterator:
    buf: list = []
    for item in stream:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        j = rng.randrange(len(buf))
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


def _tar_samples(urls: list[str], source: str, pending: list[Skipped]) -> Iterator[dict[str, Any]]:
    def handler(exn: Exception) -> bool:
        url = next((a for a in getattr(exn, "args", ()) if isinstance(a, str) and a in urls), "?")
        pending.append(Skipped(url, "bad_shard", f"{type(exn).__name__}: {exn}"[:300], source))
        return True

    yield from tarfile_samples(({"url": u} for u in urls), handler=handler)


def _epoch(urls: list[str], cfg: ReadConfig, epoch: int, source: str) -> Iterator[dict[str, Any] | Skipped]:
    me, readers = reader_slot(cfg)
    order = list(urls)
    if cfg.shuffle_shards:
        random.Random(f"{cfg.seed}/{epoch}/shards").shuffle(order)  # same order on every reader
    by_shard = cfg.split == "shard" or (cfg.split == "auto" and len(order) >= readers)
    if cfg.split not in ("shard", "sample", "auto"):
        raise ValueError(f"split must be shard, sample or auto, got {cfg.split!r}")
    mine = order[me::readers] if by_shard else order
    pending: list[Skipped] = []
    stream: Iterator = _tar_samples(mine, source, pending)
    if not by_shard:
        stream = (s for i, s in enumerate(stream) if i % readers == me)
    if cfg.shuffle_buffer > 1:
        stream = _shuffled(stream, cfg.shuffle_buffer, random.Random(f"{cfg.seed}/{epoch}/{me}"))
    for sample in stream:
        yield from pending
        pending.clear()
        yield sample
    yield from pending


def iter_raw_samples(
    shards: str | Sequence[str], cfg: ReadConfig = ReadConfig(), source: str = ""
) -> Iterator[dict[str, Any] | Skipped]:
    """Raw webdataset samples of this reader (rank x DataLoader worker), epoch after epoch if
    ``cfg.repeat``. Unreadable shards/members become ``Skipped(url, "bad_shard")`` markers."""
    urls = expand_shards(shards)
    epoch = 0
    while True:
        produced = False
        for sample in _epoch(urls, cfg, epoch, source):
            produced = produced or not isinstance(sample, Skipped)
            yield sample
        epoch += 1
        if not cfg.repeat or not produced:  # a reader with no good sample would spin forever
            return
