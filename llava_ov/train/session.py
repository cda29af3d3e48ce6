"""What every run of the loop does around its stages — the LMM's :func:`llava_ov.train.trainer.train` and
pretraining's :func:`llava_ov.pretrain.run.pretrain` alike: torch threads, the one-run lock of the output
folder, the process group, logging, the metrics logger (with the resolved config) and the loss plot."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from encoder.typed_config import to_dict
from llava_ov.train import distributed as D
from llava_ov.train.config import DeepSpeedConfig, LogConfig
from llava_ov.train.lock import acquire_for_run
from llava_ov.train.metrics import MetricsLogger, plot_loss


class RunSpec(Protocol):
    """The sections of a run config the session reads (``TrainConfig``, ``PretrainConfig``)."""

    output_dir: str
    threads: int | None
    deepspeed: DeepSpeedConfig
    log: LogConfig


def setup_logging(env: D.DistEnv) -> None:
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def run_session(run: RunSpec) -> Iterator[tuple[D.DistEnv, MetricsLogger]]:
    """``with run_session(cfg) as (env, metrics):`` the run's stages (collective under a launcher). The lock
    is taken before any process group exists and released last; the metrics logger is closed and every
    rank meets at a barrier when the stages are done."""
    if run.threads:
        torch.set_num_threads(run.threads)
    lock = acquire_for_run(run.output_dir)  # one run per output folder (llava_ov/train/lock.py)
    try:
        env = D.init_distributed(run.deepspeed)
        setup_logging(env)
        metrics = MetricsLogger(run.log, Path(run.output_dir), to_dict(run), env.is_main)
        try:
            yield env, metrics
        finally:
            metrics.close()
        D.barrier()
    finally:
        if lock is not None:
            lock.release()


def write_loss_plot(
    run: RunSpec, env: D.DistEnv, metrics: MetricsLogger, stages: list[str], **plot: Any
) -> None:
    """``loss_curve.png`` of the run's stages (rank 0, when ``log.plot``); ``plot``: titles, reference."""
    if run.log.plot and env.is_main:
        out = Path(run.output_dir)
        png = plot_loss(out / "metrics.jsonl", out / "loss_curve.png", stages, **plot)
        if png is not None:
            metrics.write(f"loss curve: {png}")


__all__ = ["RunSpec", "run_session", "setup_logging", "write_loss_plot"]
