"""Spherical k-means (faiss and torch) recovers separated clusters; the bank builder streams and
writes labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encoder.pretrain.bank import ConceptBank, build_bank
from encoder.pretrain.kmeans import (
    KMeansConfig,
    TopK,
    faiss_available,
    sample_stream,
    topk_torch,
    train_kmeans,
    train_torch,
)
from encoder.typed_config import ConfigError

BACKENDS = [
    "torch",
    pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="faiss not installed")),
]


def blobs(
    k: int = 8, n: int = 150, d: int = 16, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(d, d)))[0][:k]  # orthonormal: well separated on the sphere
    truth = np.repeat(np.arange(k), n)
    x = dirs[truth] + noise * rng.normal(size=(k * n, d))
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), truth[perm]


def chunks_of(x: np.ndarray, size: int = 97):
    return lambda: (x[i : i + size] for i in range(0, len(x), size))


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeans_recovers_separated_clusters(backend):
    x, truth = blobs()
    # faiss seeds with random rows (8 equal clusters: a random seed set hits all 8 with p = 8!/8^8), hence
    # several runs; the torch path seeds with k-means++
    redo = 10 if backend == "faiss" else 1
    result, total = train_kmeans(
        chunks_of(x), KMeansConfig(num_centres=8, iters=25, redo=redo, topk=1, backend=backend, seed=1)
    )
    assert total == len(x) and result.centres.shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(result.centres, axis=1), 1.0, rtol=1e-5)
    ids, _ = TopK(result.centres, 1, backend=backend)(x)
    pairs = set(zip(truth.tolist(), ids[:, 0].tolist()))
    assert len(pairs) == 8 and len({c for _, c in pairs}) == 8  # one centre per true cluster, none shared


def test_torch_reseeds_empty_clusters():
    x = np.concatenate([np.tile([[1.0, 0, 0]], (30, 1)), [[0, 1.0, 0]], [[0, 0, 1.0]]]).astype(np.float32)
    res = train_torch(x, KMeansConfig(num_centres=3, iters=5, seed=0, plus_plus_up_to=0))  # random seeds
    assert res.reseeded >= 1  # the seed picks two copies of the heavy point; one cluster empties
    best = (res.centres @ np.eye(3, dtype=np.float32)).max(0)
    assert np.all(best > 0.99)  # every distinct point ends up with its own centre


def test_stream_sample_is_uniform_bounded_and_counts_every_row():
    x = np.arange(1000, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32) + 1
    x[:, 0] = np.arange(1000)  # rows stay distinguishable after normalisation
    sample, total = sample_stream(chunks_of(x, 64), 100, seed=0)
    assert total == 1000 and sample.shape == (100, 4)
    again, _ = sample_stream(chunks_of(x, 333), 100, seed=0)
    np.testing.assert_array_equal(sample, again)  # the sample does not depend on the chunking
    with pytest.raises(ConfigError, match="empty"):
        sample_stream(lambda: iter(()), 10, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_is_exact(backend):
    rng = np.random.default_rng(0)
    c, x = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    cn, xn = c / np.linalg.norm(c, axis=1, keepdims=True), x / np.linalg.norm(x, axis=1, keepdims=True)
    expect = np.argsort(-(xn @ cn.T), axis=1)[:, :5]
    ids, sims = TopK(c, 5, chunk=16, backend=backend)(x)
    np.testing.assert_array_equal(ids, expect)
    np.testing.assert_allclose(sims, np.take_along_axis(xn @ cn.T, expect, 1), rtol=1e-5, atol=1e-6)
    import torch

    blocked, _ = topk_torch(xn, torch.from_numpy(cn), 5, max_elems=50 * 7)  # centre blocks of 7
    np.testing.assert_array_equal(blocked, expect)


def test_build_bank_writes_labels_by_key_and_rejects_mismatched_data(tmp_path):
    x, truth = blobs(k=4, n=60)
    keys = [f"s{i:04d}" for i in range(len(x))]
    stream = lambda: ((keys[i : i + 50], x[i : i + 50]) for i in range(0, len(x), 50))  # noqa: E731
    summary = build_bank(
        stream,
        KMeansConfig(num_centres=4, topk=3, iters=20, backend="torch"),
        tmp_path / "bank",
        {"teacher": "test"},
        progress=False,
    )
    assert (
        summary["num_samples"] == 240
        and summary["empty_clusters"] == 0
        and summary["cluster_size"]["min"] == 60
    )
    bank = ConceptBank(tmp_path / "bank")
    assert len(bank) == 240 and bank.num_centres == 4 and bank.labels.shape == (240, 3)
    top1 = {int(t): set() for t in truth}
    for k, t in zip(keys, truth):
        lab = bank.labels_for(k)
        assert len(set(lab.tolist())) == 3
        top1[int(t)].add(int(lab[0]))
    assert all(len(v) == 1 for v in top1.values())  # a true cluster's samples share their top-1 centre
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["teacher"] == "test"
    bank.check_keys(keys[:10])
    with pytest.raises(ConfigError, match="does not match the data: 2 of 3 samples"):
        bank.check_keys(["s0001", "other", "x"])
    with pytest.raises(ConfigError, match="does not exist"):
        ConceptBank(tmp_path / "nope")
    (tmp_path / "bank" / "keys.txt").unlink()
    with pytest.raises(ConfigError, match="incomplete"):
        ConceptBank(tmp_path / "bank")


def test_label_bank_for_ocr_words(tmp_path):
    from encoder.pretrain.bank import write_label_bank

    bank = write_label_bank(
        tmp_path / "ocr", ["a", "b", "c"], [[5, 9, 1], [2], []], num_classes=10, meta={"vocab": "w"}
    )
    assert bank.num_centres == 10 and bank.labels.shape == (3, 3)
    assert bank.labels_for("b").tolist() == [2, -1, -1] and bank.labels_for("c").tolist() == [-1, -1, -1]
    with pytest.raises(ConfigError, match="outside the 10 classes"):
        write_label_bank(tmp_path / "bad", ["a"], [[10]], num_classes=10)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_two_level_faiss_path_for_large_banks():
    """From ``two_level_from`` centres on, faiss clusters in two levels (coarse, then within each coarse
    cell); a low threshold exercises that path on separated clusters."""
    x, truth = blobs(k=16, n=120, d=32)
    cfg = KMeansConfig(num_centres=16, iters=20, topk=1, backend="faiss", two_level_from=16, seed=0)
    result, _ = train_kmeans(chunks_of(x), cfg)
    assert (
        result.backend == "faiss-two-level"
        and result.centres.shape == (16, 32)
        and result.stats["coarse"] == 4
    )
    ids, _ = TopK(result.centres, 1)(x)
    purity = np.mean([np.bincount(ids[truth == t, 0]).max() / (truth == t).sum() for t in range(16)])
    assert purity >= 0.9  # each true cluster lands (almost) entirely on one centre
