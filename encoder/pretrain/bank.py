"""The concept bank on disk: k-means centres and every sample's nearest centres, next to the data.

A bank folder holds ``centres.npy`` (float32 [K, D], unit norm), ``labels.npy`` (int32 [N, topk], the
nearest centres of sample i, best first), ``keys.txt`` (sample i's key: the webdataset ``__key__``, one
per line) and ``bank.json`` (sizes, the teacher, the data kind, the k-means summary). Training looks
labels up by sample key; :meth:`ConceptBank.check_keys` fails before any step when the data and the
bank do not belong together. A *label bank* (:func:`write_label_bank`: e.g. the OCR words of each image
as ids into a word vocabulary) has no centres file: its classes are only ids, the head learns them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from encoder.typed_config import ConfigError

from .kmeans import KMeansConfig, TopK, train_kmeans

Stream = Callable[[], Iterable[tuple[list[str], np.ndarray]]]  # fresh iterator of (keys, embeddings) blocks
FILES = ("centres.npy", "labels.npy", "keys.txt", "bank.json")


def keys_digest(keys: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in keys:
        h.update(k.encode() + b"\n")
    return h.hexdigest()


class ConceptBank:
    """A bank folder, read-only (arrays memory-mapped)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(
                f"concept bank folder {self.root} does not exist "
                "(build it with scripts/build_concept_bank.py)"
            )
        label_bank = (self.root / "bank.json").is_file() and json.loads(
            (self.root / "bank.json").read_text()
        ).get("kind") == "labels"
        missing = [
            f for f in FILES if not (self.root / f).is_file() and not (label_bank and f == "centres.npy")
        ]
        if missing:
            raise ConfigError(f"concept bank {self.root} is incomplete: missing {missing}")
        self.manifest: dict[str, Any] = json.loads((self.root / "bank.json").read_text())
        if label_bank:
            self.centres = np.zeros((int(self.manifest["num_centres"]), 0), np.float32)
        else:
            self.centres = np.load(self.root / "centres.npy", mmap_mode="r")
        self.labels = np.load(self.root / "labels.npy", mmap_mode="r")
        self.keys = (self.root / "keys.txt").read_text().splitlines()
        if (
            self.centres.ndim != 2
            or len(self.centres) == 0
            or (not label_bank and self.centres.shape[1] == 0)
        ):
            raise ConfigError(f"concept bank {self.root} has no centres (centres.npy {self.centres.shape})")
        if self.labels.ndim != 2 or len(self.labels) != len(self.keys):
            raise ConfigError(
                f"concept bank {self.root}: labels.npy {self.labels.shape} does not match "
                f"{len(self.keys)} keys"
            )
        if len(self.labels) and (int(self.labels.max()) >= len(self.centres) or int(self.labels.min()) < -1):
            raise ConfigError(f"concept bank {self.root}: a label is outside its {len(self.centres)} centres")
        self._row = {k: i for i, k in enumerate(self.keys)}
        if len(self._row) != len(self.keys):
            raise ConfigError(f"concept bank {self.root}: duplicate sample keys")

    @property
    def num_centres(self) -> int:
        return int(self.centres.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._row

    def labels_for(self, key: str) -> np.ndarray:
        row = self._row.get(key)
        if row is None:
            raise KeyError(f"sample {key!r} has no labels in the concept bank {self.root}")
        return np.asarray(self.labels[row], dtype=np.int64)

    def check_keys(self, keys: Iterable[str]) -> None:
        """Every key has labels here, or one clear error naming how many do not."""
        keys = list(keys)
        missing = [k for k in keys if k not in self._row]
        if missing:
            raise ConfigError(
                f"the concept bank {self.root} does not match the data: {len(missing)} of {len(keys)} "
                f"samples have no labels there (e.g. {missing[0]!r}); rebuild the bank for this data"
            )


def _replace_folder(tmp: Path, out: Path) -> None:
    """Publish a finished ``tmp`` folder as ``out`` (the old one removed): readers never see half a bank."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def write_label_bank(
    out: str | Path,
    keys: list[str],
    labels: list[list[int]],
    num_classes: int,
    meta: dict[str, Any] | None = None,
) -> ConceptBank:
    """A bank whose labels are given (e.g. each image's OCR words as ids into a ``num_classes``-word
    vocabulary; rows padded with -1 to the longest), written atomically like :func:`build_bank`."""
    if num_classes < 1:
        raise ConfigError("a label bank needs at least one class")
    width = max((len(row) for row in labels), default=0)
    arr = np.full((len(keys), max(width, 1)), -1, np.int32)
    for i, row in enumerate(labels):
        arr[i, : len(row)] = row
    if len(keys) != len(labels):
        raise ConfigError(f"{len(keys)} keys but {len(labels)} label rows")
    if arr.size and (arr.max() >= num_classes or arr.min() < -1):
        raise ConfigError(f"a label is outside the {num_classes} classes")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "labels.npy", arr)
    (tmp / "keys.txt").write_text("".join(k + "\n" for k in keys))
    (tmp / "bank.json").write_text(
        json.dumps(
            {
                "kind": "labels",
                "num_samples": len(keys),
                "num_centres": num_classes,
                "topk": int(arr.shape[1]),
                "keys_digest": keys_digest(keys),
                **(meta or {}),
            },
            indent=1,
        )
    )
    _replace_folder(tmp, out)
    return ConceptBank(out)


def build_bank(
    stream: Stream,
    cfg: KMeansConfig,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """k-means over the stream's embeddings, every sample's top-k centres, the bank folder written
    atomically (``out.tmp`` renamed); returns the summary also stored in ``bank.json``."""
    out = Path(out)
    t0 = time.perf_counter()

    def embeddings() -> Iterable[np.ndarray]:
        for _, x in stream():
            yield x

    result, total = train_kmeans(embeddings, cfg)
    t_train = time.perf_counter() - t0
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "centres.npy", result.centres.astype(np.float32))
    labels = np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.int32, shape=(total, cfg.topk))
    keys: list[str] = []
    sizes = np.zeros(cfg.num_centres, np.int64)
    sims: list[float] = []
    row = 0
    bar = tqdm(total=total, desc="assign top-k", unit="sample", disable=not progress)
    nearest = TopK(result.centres, cfg.topk, cfg.chunk, cfg.backend)
    for block_keys, x in stream():
        idx, sim = nearest(x)
        n = len(idx)
        if n != len(block_keys) or row + n > total:
            raise ConfigError(
                "the embedding stream changed between its two passes (or a block's keys and rows differ)"
            )
        labels[row : row + n] = idx
        keys.extend(block_keys)
        if n:
            sizes += np.bincount(idx[:, 0], minlength=cfg.num_centres)
            sims.append(float(sim[:, 0].mean()) * n)
        row += n
        bar.update(n)
    bar.close()
    if row != total:
        raise ConfigError("the embedding stream changed between its two passes")
    labels.flush()
    del labels
    seconds = time.perf_counter() - t0
    summary = {
        "num_samples": total,
        "num_centres": cfg.num_centres,
        "dim": int(result.centres.shape[1]),
        "topk": cfg.topk,
        "backend": result.backend,
        "num_train": result.num_train,
        "reseeded_in_training": result.reseeded,
        "empty_clusters": int((sizes == 0).sum()),
        "cluster_size": {
            "min": int(sizes.min()),
            "median": float(statistics.median(sizes.tolist())),
            "max": int(sizes.max()),
        },
        "mean_top1_cosine": sum(sims) / max(total, 1),
        "seconds": {"train": round(t_train, 3), "total": round(seconds, 3)},
        "points_per_s": {
            "train": result.num_train * cfg.iters / max(t_train, 1e-9),
            "assign": total / max(seconds - t_train, 1e-9),
        },
        "keys_digest": keys_digest(keys),
        "kmeans": asdict(cfg),
        **result.stats,
        **(meta or {}),
    }
    (tmp / "keys.txt").write_text("".join(k + "\n" for k in keys))
    (tmp / "bank.json").write_text(json.dumps(summary, indent=1))
    _replace_folder(tmp, out)
    return summary


__all__ = ["FILES", "ConceptBank", "Stream", "build_bank", "keys_digest", "write_label_bank"]
