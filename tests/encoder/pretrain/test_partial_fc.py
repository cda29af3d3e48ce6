"""Partial FC: the sharded margin softmax equals a dense one (loss and gradients), on 1 and 2 ranks."""

from __future__ import annotations

import math

import pytest
import torch
from dist_support import run_ranks

from encoder.pretrain import PartialFC, dense_margin_softmax, draw_labels, shard_bounds
from encoder.typed_config import ConfigError

C, D, L, K = 23, 16, 4, 3  # centres, dim, stored labels, drawn labels


def problem(
    sizes: list[int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(C, D, generator=g)
    embs = [torch.randn(n, D, generator=g) for n in sizes]
    labels = []
    for n in sizes:
        lab = (
            torch.stack([torch.randperm(C, generator=g)[:L] for _ in range(n)])
            if n
            else torch.zeros(0, L, dtype=torch.long)
        )
        if n > 1:
            lab[1, 2:] = -1  # a sample with only two labels (pads)
        labels.append(lab)
    return (
        bank,
        embs,
        labels,
        [draw_labels(lab, K, torch.Generator().manual_seed(100 + r)) for r, lab in enumerate(labels)],
    )


def rank_step(rank: int, world: int, sizes: list[int], rate: float = 1.0) -> dict:
    bank, embs, labels, _ = problem(sizes)
    head = PartialFC(C, D, sample_rate=rate, num_labels=K, init=bank)
    emb = embs[rank].clone().requires_grad_(True)
    out = head(emb, labels[rank], torch.Generator().manual_seed(100 + rank))
    out.loss.backward()
    return {
        "loss": float(out.loss.detach()),
        "emb_grad": emb.grad,
        "w_grad": head.weight.grad,
        "bounds": (head.start, head.end),
        "sampled": out.num_sampled,
        "local": head.num_local,
    }


def dense_reference(sizes: list[int]) -> tuple[float, torch.Tensor, torch.Tensor]:
    bank, embs, labels, drawn = problem(sizes)
    emb = torch.cat(embs).requires_grad_(True)
    w = bank.clone().requires_grad_(True)
    loss = dense_margin_softmax(emb, w, torch.cat(labels), torch.cat(drawn))
    loss.backward()
    return float(loss), emb.grad, w.grad


def check(results: list[dict], sizes: list[int]) -> None:
    loss, g_emb, g_w = dense_reference(sizes)
    starts = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    for r, res in enumerate(results):
        assert res["loss"] == pytest.approx(loss, rel=1e-5)  # the same loss on every rank
        torch.testing.assert_close(res["emb_grad"], g_emb[starts[r] : starts[r + 1]], rtol=1e-4, atol=1e-6)
        a, b = res["bounds"]
        torch.testing.assert_close(res["w_grad"], g_w[a:b], rtol=1e-4, atol=1e-6)


def test_one_rank_equals_dense():
    check([rank_step(0, 1, [6])], [6])


def test_two_ranks_uneven_batches_and_shards_equal_dense(tmp_path):
    sizes = [5, 2]
    results = run_ranks(rank_step, 2, tmp_path, sizes)
    assert [r["bounds"] for r in results] == [(0, 12), (12, 23)]  # 23 centres: uneven shards
    check(results, sizes)


def test_a_rank_with_no_samples_still_takes_part(tmp_path):
    sizes = [4, 0]
    check(run_ranks(rank_step, 2, tmp_path, sizes), sizes)


def test_sampling_keeps_every_positive_and_the_configured_count():
    head = PartialFC(400, 8, sample_rate=0.1, num_labels=2)
    positives = torch.tensor([3, 77, 399])
    idx = head.sample(positives, torch.Generator().manual_seed(0))
    assert len(idx) == 40 and set(positives.tolist()) <= set(idx.tolist()) and len(set(idx.tolist())) == 40
    many = torch.arange(0, 400, 5)  # 80 positives > 40: all kept
    assert set(head.sample(many).tolist()) >= set(many.tolist())
    labels = torch.randint(0, 400, (6, 4))
    emb = torch.randn(6, 8, requires_grad=True)
    out = head(emb, labels, torch.Generator().manual_seed(1))
    assert out.num_sampled == 40 and math.isfinite(float(out.loss))
    out.loss.backward()
    touched = (head.weight.grad.abs().sum(1) > 0).nonzero().flatten()
    assert len(touched) <= 40  # only sampled centres get a gradient


def test_sampled_loss_equals_dense_over_the_sampled_centres():
    bank, (emb,), (labels,), (drawn,) = problem([6])
    head = PartialFC(C, D, sample_rate=0.5, num_labels=K, init=bank)
    gen_state = torch.Generator().manual_seed(100)
    out = head(emb, labels, gen_state)
    g = torch.Generator().manual_seed(100)
    draw_labels(labels, K, g)  # the same draws as the module, in order
    positives = torch.unique(drawn[drawn >= 0])
    idx = head.sample(positives, g)
    remap = torch.full((C,), -1, dtype=torch.long)
    remap[idx] = torch.arange(len(idx))
    sub_stored = torch.where(labels >= 0, remap[labels.clamp(min=0)], -1)
    expected = dense_margin_softmax(
        emb, bank[idx], sub_stored, remap[drawn.clamp(min=0)].masked_fill(drawn < 0, -1)
    )
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)


def test_bad_banks_and_labels_fail_clearly():
    with pytest.raises(ConfigError, match="empty"):
        shard_bounds(0, 1)
    with pytest.raises(ConfigError, match="3 ranks but only 2 centres"):
        PartialFC(2, 4, rank=0, world_size=3)
    with pytest.raises(ConfigError, match="do not match the bank"):
        PartialFC(5, 4, init=torch.zeros(5, 3))
    head = PartialFC(5, 4)
    with pytest.raises(ValueError, match="label 7 is outside the concept bank of 5 centres"):
        head(torch.randn(2, 4), torch.tensor([[0, 7], [1, 2]]))


def dp_step(rank: int, world: int, sizes: list[int]) -> dict:
    """A backbone (linear) under data parallelism as the trainer runs it: the global loss scaled by the
    world size (the loop's rule for a global loss), backbone gradients averaged over ranks (DeepSpeed),
    the sharded centres' gradients divided by the world size (the head optimizer's rule)."""
    import torch.distributed as dist

    bank, embs, labels, _ = problem(sizes)
    torch.manual_seed(0)
    backbone = torch.nn.Linear(D, D)
    head = PartialFC(C, D, num_labels=K, init=bank)
    out = head(backbone(embs[rank]), labels[rank], torch.Generator().manual_seed(100 + rank))
    (out.loss * world).backward()
    grads = [p.grad.clone() for p in backbone.parameters()]
    if world > 1:
        for g in grads:
            dist.all_reduce(g)
    return {
        "backbone": [g / world for g in grads],
        "centres": head.weight.grad / world,
        "bounds": (head.start, head.end),
    }


def test_data_parallel_scaling_gives_the_single_process_gradient(tmp_path):
    sizes = [3, 4]
    bank, embs, labels, drawn = problem(sizes)  # the 7 samples in one process, with the ranks' label draws
    torch.manual_seed(0)
    backbone = torch.nn.Linear(D, D)
    centres = bank.clone().requires_grad_(True)
    dense_margin_softmax(backbone(torch.cat(embs)), centres, torch.cat(labels), torch.cat(drawn)).backward()
    for r in run_ranks(dp_step, 2, tmp_path, sizes):
        for got, want in zip(r["backbone"], backbone.parameters()):
            torch.testing.assert_close(got, want.grad, rtol=1e-4, atol=1e-6)
        a, b = r["bounds"]
        torch.testing.assert_close(r["centres"], centres.grad[a:b], rtol=1e-4, atol=1e-6)
