"""Spherical k-means for the concept bank: faiss (GPU when present, two-level for very large banks) or torch.

Data arrive as a stream of float32 chunks (:data:`Chunks`: a callable returning a fresh iterator, so
the stream can be read twice) and never sit in memory at once: pass 1 keeps a uniform random sample
of ``max_points_per_centre · k`` rows (the training set; the rest is only assigned) and counts the
rows; the centres are trained on that sample; pass 2 assigns every row its ``topk`` nearest centres
(cosine) chunk by chunk. Rows are L2-normalised first (spherical k-means: centres on the unit sphere,
similarity = dot product). :class:`TopK` does the assignment.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from encoder.typed_config import ConfigError, check_choices

Chunks = Callable[[], Iterable[np.ndarray]]
Backend = Literal["auto", "faiss", "torch"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)


@dataclass
class KMeansConfig:
    num_centres: int = 1024
    iters: int = 20
    redo: int = 1  # independent runs (different initial centres); the best objective is kept
    plus_plus_up_to: int = 4096  # torch: k-means++ seeding up to this many centres (random rows above)
    seed: int = 0
    backend: Backend = "auto"  # auto (faiss when installed) | faiss | torch
    gpu: bool | None = None  # faiss on GPU (None: when a GPU and faiss-gpu are present)
    max_points_per_centre: int = 256  # training sample = this × num_centres rows (at most)
    two_level_from: int = 1_000_000  # faiss: two-level clustering from this many centres on
    topk: int = 10  # nearest centres stored per sample
    chunk: int = 65536  # rows per assignment block

    def validate(self) -> None:
        check_choices(self, "kmeans.")
        if min(self.num_centres, self.iters, self.redo, self.topk, self.chunk) < 1:
            raise ConfigError("kmeans: num_centres, iters, redo, topk and chunk must be >= 1")
        if self.topk > self.num_centres:
            raise ConfigError(f"kmeans.topk {self.topk} > num_centres {self.num_centres}")


@dataclass
class KMeansResult:
    centres: np.ndarray  # float32 [k, d], unit norm
    backend: str
    num_train: int  # rows the centres were trained on
    reseeded: int = 0  # empty clusters re-seeded during training
    stats: dict = field(default_factory=dict)


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(cfg: KMeansConfig) -> str:
    if cfg.backend == "faiss" and not faiss_available():
        raise ConfigError("kmeans.backend=faiss but faiss is not installed (pip install 'llava-ov[kmeans]')")
    if cfg.backend == "auto":
        return "faiss" if faiss_available() else "torch"
    return cfg.backend


def sample_stream(chunks: Chunks, size: int, seed: int) -> tuple[np.ndarray, int]:
    """A uniform random sample of ``size`` rows of the stream (all rows if fewer) and the row count:
    each row gets a random key and the ``size`` smallest keys are kept, chunk by chunk."""
    rng = np.random.default_rng(seed)
    keep: np.ndarray | None = None
    keys = np.empty(0)
    total = 0
    for chunk in chunks():
        x = normalize(chunk)
        total += len(x)
        k = rng.random(len(x))
        pool = x if keep is None else np.concatenate([keep, x])
        pkeys = np.concatenate([keys, k])
        if len(pool) > size:
            sel = np.argpartition(pkeys, size - 1)[:size]
            pool, pkeys = pool[sel], pkeys[sel]
        keep, keys = pool, pkeys
    if keep is None or total == 0:
        raise ConfigError("no embeddings to cluster (the stream is empty)")
    return keep[np.argsort(keys, kind="stable")], total


def _torch_assign(x: torch.Tensor, centres: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    best, sim = [], []
    for i in range(0, len(x), chunk):
        s = x[i : i + chunk] @ centres.t()
        v, j = s.max(1)
        best.append(j)
        sim.append(v)
    return torch.cat(best), torch.cat(sim)


def kmeans_pp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on the sphere (distance 1 − cos): k sequential draws, O(n·k·d) in all."""
    centres = [x[int(torch.randint(len(x), (1,), generator=g))]]
    dist2 = (1.0 - x @ centres[0]).clamp(min=0)
    for _ in range(1, k):
        p = dist2 / dist2.sum() if float(dist2.sum()) > 0 else torch.full_like(dist2, 1.0 / len(dist2))
        c = x[int(torch.multinomial(p, 1, generator=g))]
        centres.append(c)
        dist2 = torch.minimum(dist2, (1.0 - x @ c).clamp(min=0))
    return torch.stack(centres)


def train_torch(x: np.ndarray, cfg: KMeansConfig) -> KMeansResult:
    """Lloyd iterations on the sphere from k-means++ seeds (``redo`` runs, the highest mean cosine
    kept); an emptied cluster is re-seeded with the rows farthest from their centres (distinct rows,
    the worst first)."""
    k = cfg.num_centres
    g = torch.Generator().manual_seed(cfg.seed)
    xt = torch.from_numpy(normalize(x))
    best: KMeansResult | None = None
    for _ in range(cfg.redo):
        if k <= cfg.plus_plus_up_to:
            centres = kmeans_pp(xt, k, g)
        else:
            centres = xt[torch.randperm(len(xt), generator=g)[:k]].clone()
        reseeded = 0
        for _ in range(cfg.iters):
            assign, sim = _torch_assign(xt, centres, cfg.chunk)
            sums = torch.zeros_like(centres).index_add_(0, assign, xt)
            counts = torch.bincount(assign, minlength=k)
            empty = (counts == 0).nonzero().flatten()
            if len(empty):
                far = sim.argsort()[: len(empty)]  # the least similar rows to their own centre
                sums[empty] = xt[far]
                reseeded += len(empty)
            centres = torch.nn.functional.normalize(sums, dim=1)
        objective = float(_torch_assign(xt, centres, cfg.chunk)[1].mean())
        if best is None or objective > best.stats["objective"]:
            best = KMeansResult(centres.numpy(), "torch", len(x), reseeded, {"objective": objective})
    assert best is not None
    return best


def train_faiss(x: np.ndarray, cfg: KMeansConfig) -> KMeansResult:
    import faiss

    d, k = x.shape[1], cfg.num_centres
    gpu = (
        cfg.gpu
        if cfg.gpu is not None
        else (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)
    )
    args = {
        "niter": cfg.iters,
        "nredo": cfg.redo,
        "seed": cfg.seed,
        "spherical": True,
        "gpu": bool(gpu),
        "verbose": False,
        "max_points_per_centroid": cfg.max_points_per_centre,
    }
    x = normalize(x)
    if k >= cfg.two_level_from:
        from faiss.contrib.clustering import two_level_clustering

        args.pop("max_points_per_centroid")
        args.pop("niter")  # the coarse level takes clustering_niter, the sub-clusters faiss's default
        nc1 = int(math.sqrt(k))
        centres, _ = two_level_clustering(x, nc1, k, clustering_niter=cfg.iters, **args)
        return KMeansResult(normalize(centres), "faiss-two-level", len(x), stats={"coarse": nc1})
    km = faiss.Kmeans(d, k, **args)
    km.train(x)
    return KMeansResult(
        normalize(km.centroids),
        "faiss-gpu" if gpu else "faiss",
        len(x),
        stats={"objective": float(km.obj[-1]) / len(x) if len(km.obj) else None},
    )


def train_kmeans(chunks: Chunks, cfg: KMeansConfig) -> tuple[KMeansResult, int]:
    """Pass 1 (sample + count) and training; returns the centres and the stream's row count."""
    cfg.validate()
    sample, total = sample_stream(chunks, cfg.max_points_per_centre * cfg.num_centres, cfg.seed)
    if len(sample) < cfg.num_centres:
        raise ConfigError(f"{len(sample)} embeddings cannot make {cfg.num_centres} centres")
    backend = resolve_backend(cfg)
    result = train_faiss(sample, cfg) if backend == "faiss" else train_torch(sample, cfg)
    return result, total


def topk_torch(
    x: np.ndarray, centres: torch.Tensor, topk: int, max_elems: int = 1 << 25
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product, the centres taken in blocks (at most ``max_elems`` scores at once)."""
    xt = torch.from_numpy(x)
    block = max(topk, max_elems // max(len(x), 1))
    best_s = torch.full((len(x), 0), float("-inf"))
    best_i = torch.zeros((len(x), 0), dtype=torch.long)
    for j in range(0, len(centres), block):
        s = xt @ centres[j : j + block].t()
        v, i = s.topk(min(topk, s.shape[1]), dim=1)
        best_s, order = torch.cat([best_s, v], 1).topk(min(topk, best_s.shape[1] + v.shape[1]), dim=1)
        best_i = torch.cat([best_i, i + j], 1).gather(1, order)
    return best_i.to(torch.int32).numpy(), best_s.numpy()


class TopK:
    """Nearest ``topk`` centres by cosine (faiss: a flat inner-product index; torch: blocked exact top-k)."""

    def __init__(self, centres: np.ndarray, topk: int, chunk: int = 65536, backend: str = "auto") -> None:
        self.centres = normalize(centres)
        self.topk, self.chunk = topk, chunk
        self.index = None
        if backend == "faiss" or (backend == "auto" and faiss_available()):
            import faiss

            self.index = faiss.IndexFlatIP(self.centres.shape[1])
            self.index.add(self.centres)
        self._ct = torch.from_numpy(self.centres)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int32 [n, topk] centre ids (best first), float32 [n, topk] cosines."""
        ids, sims = [], []
        for i in range(0, len(x), self.chunk):
            block = normalize(x[i : i + self.chunk])
            if self.index is not None:
                s, j = self.index.search(block, self.topk)
                j, s = j.astype(np.int32), s.astype(np.float32)
            else:
                j, s = topk_torch(block, self._ct, self.topk)
            ids.append(j)
            sims.append(s)
        if not ids:
            return np.zeros((0, self.topk), np.int32), np.zeros((0, self.topk), np.float32)
        return np.concatenate(ids), np.concatenate(sims)


__all__ = [
    "BACKENDS",
    "Chunks",
    "KMeansConfig",
    "KMeansResult",
    "TopK",
    "faiss_available",
    "normalize",
    "kmeans_pp",
    "resolve_backend",
    "sample_stream",
    "topk_torch",
    "train_faiss",
    "train_kmeans",
    "train_torch",
]
