"""The pretraining app: concept banks (built first when a head asks for it), then the pretrain task on
the shared loop, the loss curve and the probe of the export."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from encoder.pretrain.bank import build_bank
from llava_ov.data.mixture import resolve_shards
from llava_ov.data.shards import expand_shards
from llava_ov.pretrain.config import BankBuildConfig, HeadConfig, PretrainConfig
from llava_ov.pretrain.features import embedding_stream, spill
from llava_ov.pretrain.task import STAGE, PretrainTask
from llava_ov.train import build as B
from llava_ov.train import distributed as D
from llava_ov.train.loop import StageResult, run_task
from llava_ov.train.metrics import MetricsLogger
from llava_ov.train.session import run_session, write_loss_plot

logger = logging.getLogger("llava_ov.pretrain")


def build_head_bank(task: PretrainTask, name: str, head: HeadConfig, progress: bool = True) -> dict[str, Any]:
    """A head's bank from the shards of the sources it serves, with ``head.build`` settings."""
    b = head.build or BankBuildConfig()
    teacher, km = b.teacher_config(), b.kmeans_config()
    index = list(task.head_cfgs).index(name)
    shards = [
        s
        for i, src in enumerate(task.data_cfg.sources)
        if task.head_of_source[i] == index
        for s in expand_shards(resolve_shards(task.data_cfg, src))
    ]
    out = B.resolve_path(head.bank)
    stream = spill(embedding_stream(shards, teacher), out.with_name(out.name + ".features"), progress)
    return build_bank(
        stream,
        km,
        out,
        {"teacher": teacher.name, "teacher_config": vars(teacher), "shards": shards},
        progress=progress,
    )


def ensure_banks(task: PretrainTask, env: D.DistEnv, metrics: MetricsLogger) -> None:
    """Rank 0 builds every missing bank whose head has ``build`` settings; the others wait."""
    B.prepare(task.data_cfg, env)
    if env.is_main:
        for name, head in task.head_cfgs.items():
            if not B.resolve_path(head.bank).exists() and head.build:
                summary = build_head_bank(task, name, head, task.cfg.log.progress)
                metrics.write(
                    f"head {name}: built concept bank {head.bank}: {summary['num_samples']} samples, "
                    f"{summary['num_centres']} centres, empty {summary['empty_clusters']}"
                )
    D.barrier()


def chance_reference(task: PretrainTask) -> tuple[float, str] | None:
    """The loss of an encoder whose embeddings carry nothing (all cosines equal): log(n · e^{s·m} + 1) with
    n the negatives scored per label, for the first head (a line on the loss plot)."""
    name, head = next(iter(task.head_cfgs.items()))
    bank = json.loads((B.resolve_path(head.bank) / "bank.json").read_text())
    scored = (
        bank["num_centres"] if head.sample_rate >= 1 else math.ceil(head.sample_rate * bank["num_centres"])
    )
    level = math.log(max(scored - bank["topk"], 1) * math.exp(head.scale * head.margin) + 1)
    return level, f"chance level ({name}) {level:.2f}"


def pretrain(cfg: PretrainConfig) -> StageResult:
    """The whole run (collective under a launcher)."""
    task = PretrainTask(cfg)  # config and data errors before any process group
    with run_session(cfg) as (env, metrics):
        ensure_banks(task, env, metrics)
        result = run_task(task, cfg, env, metrics)
        write_loss_plot(
            cfg,
            env,
            metrics,
            [STAGE],
            title="Encoder pretraining loss",
            ylabel="margin-softmax loss (mean over samples x labels)",
            reference=chance_reference(task),
        )
    return result


__all__ = ["build_head_bank", "ensure_banks", "pretrain"]
