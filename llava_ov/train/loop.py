"""The one training loop every stage runs: a :class:`Task` (model, optimizer groups, data, loss, export,
evaluation) plugged into DeepSpeed, exact resume, checkpoints, metrics.

A stage: ``task.build`` → AdamW over ``task.param_groups()`` → the DeepSpeed engine → resume from the
latest complete checkpoint → ``max_steps`` optimizer steps of ``grad_accum`` micro-batches per rank
→ checkpoints every ``checkpoint.every`` steps → ``task.export`` to ``{output_dir}/{stage}/final`` →
``task.evaluate`` of that export. The LMM stages (:mod:`llava_ov.train.trainer`) and encoder
pretraining (:mod:`llava_ov.pretrain.task`) are tasks of this loop.

Loss weighting: a micro-batch's loss is rescaled so that a step's gradient is the gradient of the
weighted mean over the whole step (weights: ``task.weight`` — target tokens, samples), however the
data fall into micro-batches and ranks. DeepSpeed divides by ``grad_accum`` and averages over ranks;
the scale undoes both. A task whose loss is already global (``global_loss``: every rank returns the
same value over all ranks' samples, as the partial-FC softmax does) is weighted by each micro-batch's
global weight instead of the rank's own.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from encoder.typed_config import to_dict
from llava_ov.data.stats import REASONS, DataStats
from llava_ov.train import checkpoint as C
from llava_ov.train import distributed as D
from llava_ov.train.config import OptimConfig
from llava_ov.train.metrics import MetricsLogger, StepTimer
from llava_ov.train.optim import build_optimizer, set_lr
from llava_ov.train.schedule import stage_lr_factor

logger = logging.getLogger("llava_ov.train")


@dataclass
class StageResult:
    name: str
    export: Path
    steps: int
    seconds: float = 0.0
    eval: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    skipped: bool = False  # already finished by an earlier run


class StageSpec(Protocol):
    """What the loop reads of a stage's config (:class:`llava_ov.train.config.StageConfig`,
    :class:`llava_ov.pretrain.config.PretrainStage`)."""

    max_steps: int
    grad_accum: int
    optim: OptimConfig


class Task(ABC):
    """One stage as the loop runs it: ``stage`` (steps, accumulation, optimizer settings) and the model
    ``build`` makes; the abstract methods are what every task defines, the others have defaults."""

    name: str
    stage: StageSpec
    model: nn.Module
    global_loss: bool = False  # forward() returns the same all-rank loss on every rank

    @abstractmethod
    def build(self, env: D.DistEnv) -> None:
        """Prepare data (rank 0 first), build ``self.model`` (seeded), freeze what does not train."""

    @abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups (``name``, ``params``, ``lr``, ``base_lr``, ``weight_decay``) of the engine's
        parameters."""

    @abstractmethod
    def make_loader(self, env: D.DistEnv, resume: dict[str, Any] | None) -> Any:
        """This rank's batches: an iterable with ``state_dict()`` (exact resume) and ``stats``
        (:class:`DataStats`)."""

    @abstractmethod
    def weight(self, batch: Any) -> float:
        """What this rank's micro-batch loss averages over (target tokens, samples)."""

    @abstractmethod
    def forward(self, engine: D.Engine, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The micro-batch's mean loss (computed here, outside the model's forward) and extra values to
        log (the same names for every batch)."""

    @abstractmethod
    def export(self, engine: D.Engine, env: D.DistEnv, final: Path) -> None:
        """Write the stage's export to ``final`` (collective)."""

    def counts(self, batch: Any) -> dict[str, float]:
        """Per-batch quantities summed over micro-batches and ranks for the step record (the same names
        for every batch)."""
        return {}

    def step_record(self, sums: dict[str, float], seconds: float, env: D.DistEnv) -> dict[str, Any]:
        """Derived fields of the step record (throughput, MFU) from the summed counts."""
        return {}

    def extra_step(self, lr_factor: float, env: D.DistEnv) -> dict[str, float]:
        """Optimizers outside the engine (e.g. sharded heads) after the engine's step; their LRs."""
        return {}

    def save_extra(self, path: Path, env: D.DistEnv) -> None:
        """State outside the engine and the loader (collective), into the checkpoint folder ``path``;
        none by default."""
        return None

    def load_extra(self, path: Path, env: D.DistEnv, state: dict[str, Any]) -> None:
        """Restore :meth:`save_extra` (``state``: the trainer state of that checkpoint)."""
        return None

    def check_world_size(self, state: dict[str, Any], env: D.DistEnv) -> None:
        if state["world_size"] != env.world_size:
            raise ValueError(
                f"the checkpoint was written by {state['world_size']} ranks; exact resume needs the same "
                f"world size (running {env.world_size})"
            )

    def describe(self, env: D.DistEnv) -> str:
        return f"stage {self.name}"

    def evaluate(self, final: Path, env: D.DistEnv, metrics: MetricsLogger) -> dict[str, Any] | None:
        return None

    def release(self) -> None:
        """Drop what the stage built (before evaluation loads the export)."""
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stats_state(stats: DataStats) -> dict[str, Any]:
    return {"used": stats.used, "skipped": dict(stats.skipped), "by_source": dict(stats.by_source)}


def restore_stats(stats: DataStats, state: dict[str, Any]) -> None:
    stats.used = int(state["used"])
    stats.skipped.update(state["skipped"])
    stats.by_source.update(state["by_source"])


def gather(it: Iterator[Any], gas: int, timer: StepTimer) -> list[Any]:
    """Up to ``gas`` micro-batches of this rank (fewer when its data ran out), timing the waits."""
    batches: list[Any] = []
    for _ in range(gas):
        t = time.perf_counter()
        batch = next(it, None)
        timer.wait(time.perf_counter() - t)
        if batch is None:
            break
        batches.append(batch)
    return batches


def forward_backward(
    task: Task, engine: D.Engine, batches: list[Any], local: list[float], global_: list[float], env: D.DistEnv
) -> tuple[float, dict[str, float]]:
    """Forward, backward and the engine's step for each micro-batch, its loss rescaled so that the step's
    gradient is that of the weighted mean over the whole step (see the module docstring). ``local`` /
    ``global_``: each micro-batch's weight on this rank / summed over ranks. Returns this rank's share of
    the weighted loss and the sums of the tasks's extra values."""
    gas, total = task.stage.grad_accum, max(sum(global_), 1e-12)
    loss_sum, extra = 0.0, {}
    for m, batch in enumerate(batches):
        loss, logs = task.forward(engine, batch)
        own = global_[m] if task.global_loss else local[m]
        engine.backward(loss * (own * env.world_size * gas / total))
        engine.step()
        loss_sum += float(loss.detach()) * (global_[m] / env.world_size if task.global_loss else local[m])
        for k, v in logs.items():
            extra[k] = extra.get(k, 0.0) + v
    return loss_sum, extra


def step_sums(
    task: Task,
    batches: list[Any],
    loss_sum: float,
    extra: dict[str, float],
    stats: DataStats,
    timer: StepTimer,
) -> dict[str, float]:
    """The step's quantities summed over ranks, by name: ``loss``, ``data_wait``, ``used``,
    ``skipped/<reason>``, ``count/<name>`` (:meth:`Task.counts`), ``extra/<name>`` (:meth:`Task.forward`)."""
    values = {"loss": loss_sum, "data_wait": timer.data_wait, "used": float(stats.used)}
    values |= {f"skipped/{r}": float(stats.skipped.get(r, 0)) for r in REASONS}
    for b in batches:
        for k, v in task.counts(b).items():
            values[f"count/{k}"] = values.get(f"count/{k}", 0.0) + v
    values |= {f"extra/{k}": v for k, v in extra.items()}
    return D.all_reduce_named(values)


def train_step(
    task: Task, engine: D.Engine, loader: Any, it: Iterator[Any], env: D.DistEnv, step: int, step_offset: int
) -> dict[str, Any] | None:
    """One optimizer step (collective); None when a rank's data ran out (every rank then stops)."""
    gas, max_steps = task.stage.grad_accum, task.stage.max_steps
    timer = StepTimer()
    batches = gather(it, gas, timer)
    local = [task.weight(b) for b in batches] + [0.0] * (gas - len(batches))
    weights = D.all_reduce_named(
        {f"weight/{m}": w for m, w in enumerate(local)} | {"exhausted": float(len(batches) < gas)}
    )
    if weights.pop("exhausted"):
        return None
    global_ = [weights[f"weight/{m}"] for m in range(gas)]
    total = max(sum(global_), 1e-12)
    factor = stage_lr_factor(task.stage.optim, step, max_steps)
    lrs = set_lr(engine.optimizer, factor)
    loss_sum, extra = forward_backward(task, engine, batches, local, global_, env)
    lrs |= task.extra_step(factor, env)
    grad_norm = engine.get_global_grad_norm()
    seconds = timer.elapsed
    sums = step_sums(task, batches, loss_sum, extra, loader.stats, timer)
    skips = {r: int(sums[f"skipped/{r}"]) for r in REASONS}
    per_rank = env.world_size if task.global_loss else 1
    record = {
        "stage": task.name,
        "step": step + 1,
        "max_steps": max_steps,
        "global_step": step_offset + step + 1,
        "loss": sums["loss"] / total,
        "weight": total,
        **{f"lr/{k}": v for k, v in lrs.items()},
        "grad_norm": None if grad_norm is None else float(grad_norm),
        **task.step_record({k[6:]: v for k, v in sums.items() if k.startswith("count/")}, seconds, env),
        "step_time_s": seconds,
        "data_wait_s": sums["data_wait"] / env.world_size,
        "peak_mem_gb": D.peak_memory_gb(env.device),
        **{k[6:]: v / per_rank for k, v in sums.items() if k.startswith("extra/")},
        "used_samples": int(sums["used"]),
        "skipped": sum(skips.values()),
        **{f"skipped/{r}": n for r, n in skips.items() if n},
        "time": time.time(),
    }
    if not math.isfinite(record["loss"]):
        raise FloatingPointError(f"stage {task.name} step {step + 1}: loss is {record['loss']}")
    return record


def run_task(
    task: Task, run: Any, env: D.DistEnv, metrics: MetricsLogger, step_offset: int = 0
) -> StageResult:
    """Train one stage (collective). ``run``: the run config (``output_dir``, ``seed``, ``deepspeed``,
    ``checkpoint``, ``log`` sections)."""
    name, stage = task.name, task.stage
    sdir, final = C.stage_dir(run.output_dir, name), C.final_dir(run.output_dir, name)
    if run.checkpoint.resume != "none" and C.is_complete_export(final):
        metrics.write(f"stage {name}: already exported at {final}, skipped")
        return StageResult(name, final, stage.max_steps, skipped=True)
    start_time = time.perf_counter()
    task.build(env)
    optimizer = build_optimizer(task.param_groups(), stage.optim)
    engine = D.build_engine(
        task.model, optimizer, D.deepspeed_config(run.deepspeed, env, stage.grad_accum, stage.optim.grad_clip)
    )
    seed_everything(run.seed * 1000 + env.rank)
    start, rank_state = 0, {}
    path = C.find_resume(run.checkpoint.resume, sdir / C.CHECKPOINTS)
    if path is not None:
        state, rank_state = C.load(engine, env, path, task.check_world_size)
        task.load_extra(path, env, state)
        start = int(state["step"])
        logger.info("resumed from %s (step %d)", path, start)
    loader = task.make_loader(env, rank_state.get("data"))
    if "stats" in rank_state:
        restore_stats(loader.stats, rank_state["stats"])
    if "rng" in rank_state:
        C.set_rng_state(rank_state["rng"])
    metrics.write(
        task.describe(env) + f", ZeRO-{run.deepspeed.zero_stage}, {env.world_size} rank(s), {env.dtype}, "
        f"device {env.device}"
    )
    metrics.start_stage(name, start, stage.max_steps)
    it = iter(loader)
    step = start
    for step in range(start, stage.max_steps):
        record = train_step(task, engine, loader, it, env, step, step_offset)
        if record is None:
            metrics.write(f"stage {name}: the training data ran out after {step} steps")
            break
        metrics.log(record)
        done = step + 1
        if run.checkpoint.every and done % run.checkpoint.every == 0 and done < stage.max_steps:
            C.save(
                engine,
                env,
                sdir / C.CHECKPOINTS,
                done,
                {"stage": name, "config": to_dict(run)},
                {"data": loader.state_dict(), "stats": stats_state(loader.stats)},
                run.checkpoint.keep,
                extra=task.save_extra,
            )
    else:
        step = stage.max_steps
    metrics.end_stage()
    totals = D.all_gather_object(stats_state(loader.stats))
    data_summary = {
        "used": sum(t["used"] for t in totals),
        "skipped": {r: sum(t["skipped"].get(r, 0) for t in totals) for r in REASONS},
    }
    metrics.write(
        f"stage {name}: data used {data_summary['used']} samples, skipped "
        f"{sum(data_summary['skipped'].values())} "
        f"{ ({k: v for k, v in data_summary['skipped'].items() if v}) }"
    )
    task.export(engine, env, final)
    metrics.write(f"stage {name}: exported {final}")
    del engine, optimizer, loader, it
    task.release()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    summary = task.evaluate(final, env, metrics)
    return StageResult(name, final, step, time.perf_counter() - start_time, summary, data_summary)


__all__ = ["StageResult", "Task", "restore_stats", "run_task", "seed_everything", "stats_state", "train_step"]
