"""The LMM app of the trainer: stages as configs (see :mod:`llava_ov.train.config`), each one an
:class:`LMMTask` run by the shared loop (:mod:`llava_ov.train.loop`).

A stage: build (or load) the model, freeze / LoRA per ``trainable``, AdamW groups per module, the
DeepSpeed engine, resume from the latest checkpoint, then ``max_steps`` optimizer steps of
``grad_accum`` packed micro-batches per rank (the step's gradient is that of the token mean over the
whole step), checkpoints every ``checkpoint.every`` steps, the named export
``{output_dir}/{stage}/final`` and the held-out evaluation of that export.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from llava_ov.data import LMMBatch, build_loader
from llava_ov.model import LlavaOVModel
from llava_ov.text import IGNORE_INDEX
from llava_ov.train import build as B
from llava_ov.train import checkpoint as C
from llava_ov.train import distributed as D
from llava_ov.train.config import STAGES, TrainConfig
from llava_ov.train.evaluate import evaluate, format_table
from llava_ov.train.flops import flop_model, squared_lengths
from llava_ov.train.loop import StageResult, Task, run_task
from llava_ov.train.metrics import MetricsLogger, mfu, peak_flops
from llava_ov.train.optim import configure_trainable, count_parameters, param_groups
from llava_ov.train.session import run_session, write_loss_plot

logger = logging.getLogger("llava_ov.train")


def num_targets(batch: LMMBatch) -> int:
    """Tokens the loss averages over (labels shifted by one, as the model's loss does)."""
    return int((batch.text.labels[:, 1:] != IGNORE_INDEX).sum()) if batch.text is not None else 0


def sample_sq(batch: LMMBatch) -> float:
    """Σ sample length² of a packed or padded batch (the attention term of the FLOP count)."""
    text = batch.text
    if text is None:
        return 0.0
    if hasattr(text, "cu_seqlens"):
        return squared_lengths(text.cu_seqlens)
    lengths = text.attention_mask.sum(dim=1).double()
    return float((lengths * lengths).sum())


def step_offset(cfg: TrainConfig, name: str) -> int:
    return sum(cfg.stage(s).max_steps for s in STAGES[: STAGES.index(name)])


class LMMTask(Task):
    """One LMM stage (align / sft): vision tower → projector → LLM on packed text + media batches; the
    loss is the token mean of the next-token cross-entropy."""

    def __init__(self, cfg: TrainConfig, name: str, tokenizer: Any) -> None:
        self.cfg, self.name, self.stage, self.tokenizer = cfg, name, cfg.stage(name), tokenizer
        self.data_cfg = B.stage_data_config(cfg, name)

    def build(self, env: D.DistEnv) -> None:
        B.prepare(self.data_cfg, env)
        self.model = B.build_stage_model(self.cfg, self.name, self.stage, self.tokenizer)
        self.tokenizer = self.model.tokenizer or self.tokenizer
        configure_trainable(self.model, self.stage)
        self.params = count_parameters(self.model)
        self.flops = flop_model(self.model)
        self.peak = peak_flops(D.device_name(env.device), self.cfg.log.peak_tflops)

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.model, self.stage.optim)

    def make_loader(self, env: D.DistEnv, resume: dict[str, Any] | None) -> Any:
        return build_loader(
            self.data_cfg,
            self.tokenizer,
            self.model.token_counter(),
            env.rank,
            env.world_size,
            resume=resume,
        )

    def weight(self, batch: LMMBatch) -> float:
        return float(num_targets(batch))

    def forward(self, engine: Any, batch: LMMBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return engine(batch).loss, {}

    def counts(self, batch: LMMBatch) -> dict[str, float]:
        return {
            "targets": num_targets(batch),
            "text_tokens": batch.num_tokens,
            "visual_tokens": batch.media.num_patches,
            "llm_visual": int(batch.media.num_tokens.sum()),
            "samples": batch.num_samples,
            "sample_sq": sample_sq(batch),
            "media_sq": squared_lengths(batch.media.cu_seqlens),
        }

    def step_record(self, sums: dict[str, float], seconds: float, env: D.DistEnv) -> dict[str, Any]:
        text, patches, samples = sums["text_tokens"], sums["visual_tokens"], sums["samples"]
        return {
            "targets": int(sums["targets"]),
            "tokens_per_s": text / seconds,
            "visual_tokens_per_s": patches / seconds,
            "mfu": mfu(
                self.flops.step_flops(
                    text, sums["targets"], sums["llm_visual"], patches, sums["sample_sq"], sums["media_sq"]
                ),
                seconds,
                env.world_size,
                self.peak,
            ),
            "samples": int(samples),
            "text_tokens": int(text),
            "visual_tokens": int(patches),
            # equal LLM tokens is not equal tower compute: both, per sample
            "llm_visual_tokens_per_sample": sums["llm_visual"] / max(samples, 1),
            "tower_patches_per_sample": patches / max(samples, 1),
        }

    def describe(self, env: D.DistEnv) -> str:
        p, st = self.params, self.stage
        return (
            f"stage {self.name}: {p['total'] / 1e6:.2f}M parameters, {p['trainable'] / 1e6:.3f}M trainable "
            f"({', '.join(st.trainable)}{' + LoRA' if st.lora.enabled else ''})"
        )

    def export(self, engine: Any, env: D.DistEnv, final: Path) -> None:
        """``model.save_pretrained`` + ``processor.save_pretrained`` on rank 0 (full parameters gathered
        under ZeRO-3), written atomically."""
        processor = B.stage_processor(self.data_cfg, self.model, self.tokenizer)
        D.barrier()
        with D.gathered_params(self.model, engine):
            if env.is_main:
                tmp = final.with_name(final.name + ".tmp")
                self.model.save_pretrained(tmp)
                processor.save_pretrained(tmp)
                C.replace_folder(tmp, final)
        D.barrier()

    def release(self) -> None:
        del self.model

    def evaluate(self, final: Path, env: D.DistEnv, metrics: MetricsLogger) -> dict[str, Any] | None:
        """Greedy held-out accuracy of the exported model (what ships is what is measured)."""
        if not (self.stage.evaluate and self.data_cfg.eval_sources):
            return None
        model = LlavaOVModel.from_pretrained(final, dtype=env.dtype).to(env.device)
        out = C.stage_dir(self.cfg.output_dir, self.name) / "eval.json"
        summary = evaluate(model, model.tokenizer, self.data_cfg, env, self.cfg.eval, out)
        if summary is not None:
            metrics.write(f"held-out evaluation after {self.name} ({final}):\n{format_table(summary)}")
            metrics.summary(
                {
                    f"{self.name}/eval/accuracy": summary["accuracy"],
                    **{f"{self.name}/eval/{k}": t["accuracy"] for k, t in summary["per_type"].items()},
                }
            )
        return summary


def run_stage(
    cfg: TrainConfig, name: str, env: D.DistEnv, tokenizer: Any, metrics: MetricsLogger
) -> StageResult:
    return run_task(LMMTask(cfg, name, tokenizer), cfg, env, metrics, step_offset(cfg, name))


# ----------------------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict[str, StageResult]:
    """Run ``cfg.stages`` in order (collective under a launcher); returns the results per stage."""
    cfg.validate()
    B.check_run_paths(cfg)  # fail fast on a missing path or a bad data section, before any process group
    for name in cfg.stages:
        B.stage_data_config(cfg, name)
    results: dict[str, StageResult] = {}
    with run_session(cfg) as (env, metrics):
        tokenizer = B.build_tokenizer(cfg, env)
        for name in cfg.stages:
            results[name] = run_stage(cfg, name, env, tokenizer, metrics)
        write_loss_plot(cfg, env, metrics, list(STAGES))
    return results


__all__ = ["LMMTask", "StageResult", "num_targets", "run_stage", "sample_sq", "train"]
