"""The trainer's named all-reduce over two gloo ranks: sums by name, and ranks that reduce different
quantities fail instead of summing one into another."""

from __future__ import annotations

import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from llava_ov.train import distributed as D


def _worker(rank: int, port: int, names: list[list[str]], out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out.put((rank, D.all_reduce_named({k: float(rank + 1) * (i + 1) for i, k in enumerate(names[rank])})))
    except RuntimeError as e:
        out.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def _run(names: list[list[str]]) -> dict[int, object]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, names, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    return results


@pytest.mark.parametrize(
    "names, expect",
    [
        ([["loss", "used"], ["loss", "used"]], {"loss": 3.0, "used": 6.0}),  # (1+2)·1, (1+2)·2
        ([["loss", "used"], ["loss", "wait"]], "ranks reduce different quantities"),
    ],
)
def test_named_reduce_over_two_ranks(names, expect, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    results = _run(names)
    for rank in (0, 1):
        if isinstance(expect, dict):
            assert results[rank] == expect
        else:
            assert expect in results[rank]


def test_named_reduce_single_process_is_identity():
    assert D.all_reduce_named({"b": 2.0, "a": 1.0}) == {"a": 1.0, "b": 2.0}
