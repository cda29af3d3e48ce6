"""The LMM trainer: one loop, stages as configs (see :mod:`llava_ov.train.config`).

A stage: build (or load) the model, freeze / LoRA per ``trainable``, AdamW groups per module, the
DeepSpeed engine, resume from the latest checkpoint, then ``max_steps`` optimizer steps of
``grad_accum`` packed micro-batches per rank, checkpoints every ``checkpoint.every`` steps, the named
export ``{output_dir}/{stage}/final`` and the held-out evaluation of that export.

Loss weighting: each micro-batch's token-mean loss is rescaled by its share of the step's targets
over all micro-batches and ranks, so a step's gradient is the gradient of the token mean over the
whole step, however the tokens fall into packs and ranks (DeepSpeed divides by ``grad_accum`` and
averages over ranks; the scale undoes both).
"""

from __future__ import annotations

import gc
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder.config import to_dict
from llava_ov.data import DataStats, LMMBatch, build_loader
from llava_ov.data.stats import REASONS
from llava_ov.model import LlavaOVModel
from llava_ov.text import IGNORE_INDEX
from llava_ov.train import build as B
from llava_ov.train import checkpoint as C
from llava_ov.train import distributed as D
from llava_ov.train.config import STAGES, StageConfig, TrainConfig
from llava_ov.train.evaluate import evaluate, format_table
from llava_ov.train.metrics import MetricsLogger, StepTimer, mfu, peak_flops, plot_loss, train_flops
from llava_ov.train.optim import build_optimizer, configure_trainable, count_parameters, param_groups, set_lr
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


@dataclass
class StageContext:
    cfg: TrainConfig
    name: str
    stage: StageConfig
    env: D.DistEnv
    engine: Any
    loader: Any
    params: dict[str, int]
    peak: float | None
    step_offset: int  # global step of this stage's step 0 (for plots across stages)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def num_targets(batch: LMMBatch) -> int:
    """Tokens the loss averages over (labels shifted by one, as the model's loss does)."""
    return int((batch.text.labels[:, 1:] != IGNORE_INDEX).sum()) if batch.text is not None else 0


def stats_state(stats: DataStats) -> dict[str, Any]:
    return {"used": stats.used, "skipped": dict(stats.skipped), "by_source": dict(stats.by_source)}


def restore_stats(stats: DataStats, state: dict[str, Any]) -> None:
    stats.used = int(state["used"])
    stats.skipped.update(state["skipped"])
    stats.by_source.update(state["by_source"])


def step_offset(cfg: TrainConfig, name: str) -> int:
    return sum(cfg.stage(s).max_steps for s in STAGES[: STAGES.index(name)])


# ----------------------------------------------------------------------------- one step


def train_step(ctx: StageContext, it: Any, step: int) -> dict[str, Any] | None:
    """One optimizer step (collective); None when a rank's data ran out (every rank then stops)."""
    engine, env, gas = ctx.engine, ctx.env, ctx.stage.grad_accum
    timer = StepTimer()
    batches: list[LMMBatch] = []
    for _ in range(gas):
        t = time.perf_counter()
        batch = next(it, None)
        timer.wait(time.perf_counter() - t)
        if batch is None:
            break
        batches.append(batch)
    local_targets = sum(num_targets(b) for b in batches)
    total_targets, exhausted = D.all_reduce_sum([local_targets, float(len(batches) < gas)])
    if exhausted:
        return None
    lrs = set_lr(engine.optimizer, stage_lr_factor(ctx.stage.optim, step, ctx.stage.max_steps))
    loss_sum = 0.0
    for batch in batches:
        out = engine(batch)
        engine.backward(out.loss * (out.num_targets * env.world_size * gas / max(total_targets, 1.0)))
        engine.step()
        loss_sum += float(out.loss.detach()) * out.num_targets
    grad_norm = engine.get_global_grad_norm()
    seconds = timer.elapsed
    stats = ctx.loader.stats
    sums = D.all_reduce_sum([loss_sum, sum(b.num_tokens for b in batches), sum(b.media.num_patches for b in batches),
                             sum(int(b.media.num_tokens.sum()) for b in batches),
                             sum(b.num_samples for b in batches), timer.data_wait, stats.used,
                             *(stats.skipped.get(r, 0) for r in REASONS)])
    loss, text_tokens, patches, llm_visual, samples, wait, used, *skips = sums
    flops = train_flops(ctx.params, text_tokens, patches)
    record = {
        "stage": ctx.name, "step": step + 1, "max_steps": ctx.stage.max_steps,
        "global_step": ctx.step_offset + step + 1,
        "loss": loss / max(total_targets, 1.0), "targets": int(total_targets),
        **{f"lr/{k}": v for k, v in lrs.items()},
        "grad_norm": None if grad_norm is None else float(grad_norm),
        "tokens_per_s": text_tokens / seconds, "visual_tokens_per_s": patches / seconds,
        "mfu": mfu(flops, seconds, env.world_size, ctx.peak), "step_time_s": seconds,
        "data_wait_s": wait / env.world_size, "peak_mem_gb": D.peak_memory_gb(env.device),
        "samples": int(samples), "text_tokens": int(text_tokens), "visual_tokens": int(patches),
        # equal LLM tokens is not equal tower compute: both, per sample
        "llm_visual_tokens_per_sample": llm_visual / max(samples, 1), "tower_patches_per_sample": patches / max(samples, 1),
        "used_samples": int(used), "skipped": int(sum(skips)),
        **{f"skipped/{r}": int(n) for r, n in zip(REASONS, skips) if n},
        "time": time.time(),
    }
    if not math.isfinite(record["loss"]):
        raise FloatingPointError(f"stage {ctx.name} step {step + 1}: loss is {record['loss']}")
    return record


# ----------------------------------------------------------------------------- one stage


def _resume(cfg: TrainConfig, sdir: Path, engine: Any, env: D.DistEnv) -> tuple[int, dict[str, Any]]:
    path = C.find_resume(cfg.checkpoint.resume, sdir / C.CHECKPOINTS)
    if path is None:
        return 0, {}
    state, rank_state = C.load(engine, env, path)
    logger.info("resumed from %s (step %d)", path, state["step"])
    return int(state["step"]), rank_state


def export(model: LlavaOVModel, engine: Any, env: D.DistEnv, final: Path, processor: Any) -> None:
    """``model.save_pretrained`` + ``processor.save_pretrained`` on rank 0 (full parameters gathered
    under ZeRO-3), written atomically."""
    D.barrier()
    with D.gathered_params(model, engine):
        if env.is_main:
            tmp = final.with_name(final.name + ".tmp")
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            if final.exists():
                import shutil

                shutil.rmtree(final)
            tmp.rename(final)
    D.barrier()


def evaluate_export(cfg: TrainConfig, name: str, final: Path, data_cfg: Any, env: D.DistEnv,
                    metrics: MetricsLogger) -> dict[str, Any] | None:
    """Greedy held-out accuracy of the exported model (what ships is what is measured)."""
    model = LlavaOVModel.from_pretrained(final, dtype=env.dtype).to(env.device)
    summary = evaluate(model, model.tokenizer, data_cfg, env, cfg.eval, C.stage_dir(cfg.output_dir, name) / "eval.json")
    if summary is not None:
        metrics.write(f"held-out evaluation after {name} ({final}):\n{format_table(summary)}")
        metrics.summary({f"{name}/eval/accuracy": summary["accuracy"],
                         **{f"{name}/eval/{k}": t["accuracy"] for k, t in summary["per_type"].items()}})
    return summary


def run_stage(cfg: TrainConfig, name: str, env: D.DistEnv, tokenizer: Any, metrics: MetricsLogger) -> StageResult:
    stage = cfg.stage(name)
    sdir, final = C.stage_dir(cfg.output_dir, name), C.final_dir(cfg.output_dir, name)
    if cfg.checkpoint.resume != "none" and C.is_exported(final):
        metrics.write(f"stage {name}: already exported at {final}, skipped")
        return StageResult(name, final, stage.max_steps, skipped=True)
    start_time = time.perf_counter()
    data_cfg = B.stage_data_config(cfg, stage)
    B.prepare(data_cfg, env)
    model = B.build_stage_model(cfg, name, stage, tokenizer)
    tokenizer = model.tokenizer or tokenizer
    configure_trainable(model, stage)
    params = count_parameters(model)
    optimizer = build_optimizer(param_groups(model, stage.optim), stage.optim)
    ds_config = D.deepspeed_config(cfg.deepspeed, env, stage.grad_accum, stage.optim.grad_clip)
    engine = D.build_engine(model, optimizer, ds_config)
    _seed_everything(cfg.seed * 1000 + env.rank)
    start, rank_state = _resume(cfg, sdir, engine, env)
    loader = build_loader(data_cfg, tokenizer, model.tokens_counter(), env.rank, env.world_size,
                          resume=rank_state.get("data"))
    if "stats" in rank_state:
        restore_stats(loader.stats, rank_state["stats"])
    if "rng" in rank_state:
        C.set_rng_state(rank_state["rng"])
    peak = peak_flops(D.device_name(env.device), cfg.log.peak_tflops)
    ctx = StageContext(cfg, name, stage, env, engine, loader, params, peak, step_offset(cfg, name))
    metrics.write(f"stage {name}: {params['total'] / 1e6:.2f}M parameters, {params['trainable'] / 1e6:.3f}M "
                  f"trainable ({', '.join(stage.trainable)}{' + LoRA' if stage.lora.enabled else ''}), "
                  f"ZeRO-{cfg.deepspeed.zero_stage}, {env.world_size} rank(s), {env.dtype}, device {env.device}")
    metrics.start_stage(name, start, stage.max_steps)
    it = iter(loader)
    step = start
    for step in range(start, stage.max_steps):
        record = train_step(ctx, it, step)
        if record is None:
            metrics.write(f"stage {name}: the training data ran out after {step} steps")
            break
        metrics.log(record)
        done = step + 1
        if cfg.checkpoint.every and done % cfg.checkpoint.every == 0 and done < stage.max_steps:
            C.save(engine, env, sdir / C.CHECKPOINTS, done, {"stage": name, "config": to_dict(cfg)},
                   {"data": loader.state_dict(), "stats": stats_state(loader.stats)}, cfg.checkpoint.keep)
    else:
        step = stage.max_steps
    metrics.end_stage()
    totals = D.all_gather_object(stats_state(loader.stats))
    data_summary = {"used": sum(t["used"] for t in totals),
                    "skipped": {r: sum(t["skipped"].get(r, 0) for t in totals) for r in REASONS}}
    metrics.write(f"stage {name}: data used {data_summary['used']} samples, skipped "
                  f"{sum(data_summary['skipped'].values())} {({k: v for k, v in data_summary['skipped'].items() if v})}")
    export(model, engine, env, final, B.stage_processor(data_cfg, model, tokenizer))
    metrics.write(f"stage {name}: exported {final}")
    del engine, optimizer, model, loader, it
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    summary = None
    if stage.evaluate and data_cfg.eval_sources:
        summary = evaluate_export(cfg, name, final, data_cfg, env, metrics)
    return StageResult(name, final, step, time.perf_counter() - start_time, summary, data_summary)


# ----------------------------------------------------------------------------- the run


def setup_logging(env: D.DistEnv) -> None:
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def train(cfg: TrainConfig) -> dict[str, StageResult]:
    """Run ``cfg.stages`` in order (collective under a launcher); returns the results per stage."""
    cfg.validate()
    for name in cfg.stages:  # fail fast on a bad data section, before any process group or model
        B.stage_data_config(cfg, cfg.stage(name))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = D.init_distributed(cfg.deepspeed)
    setup_logging(env)
    out = Path(cfg.output_dir)
    tokenizer = B.build_tokenizer(cfg, env)
    metrics = MetricsLogger(cfg.log, out, to_dict(cfg), env.is_main)
    results: dict[str, StageResult] = {}
    try:
        for name in cfg.stages:
            results[name] = run_stage(cfg, name, env, tokenizer, metrics)
        if cfg.log.plot and env.is_main:
            png = plot_loss(out / "metrics.jsonl", out / "loss_curve.png", list(STAGES))
            if png is not None:
                metrics.write(f"loss curve: {png}")
    finally:
        metrics.close()
    D.barrier()
    return results


__all__ = ["StageResult", "num_targets", "run_stage", "train", "train_step"]
