"""Encoder pretraining as a task of the shared trainer loop (:mod:`llava_ov.train.loop`).

Model: the OV-Encoder (the module DeepSpeed wraps) returns one pooled embedding per packed sample.
Loss (here, outside the model's forward): for every head, the partial-FC margin softmax of the pooled
embeddings of the samples it serves against its sharded concept bank, weighted and summed. The
loss is global (every rank holds the same value over all ranks' samples), so the loop weights each
micro-batch by its global sample count. The heads' centres live outside the engine
(:class:`llava_ov.pretrain.heads.HeadSet`: own AdamW, own clipping, re-shardable checkpoint files).
Export: the encoder alone (``OVEncoder.save_pretrained``), which the LMM loads with
``model.tower.path=EXPORT``; evaluation: an attentive probe of the export vs the same encoder at
random init.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoder.model import OVEncoder, get_config
from encoder.pretrain.bank import ConceptBank
from encoder.typed_config import ConfigError, merge_config
from llava_ov.data import load_data_config
from llava_ov.pretrain.config import PretrainConfig
from llava_ov.pretrain.data import PretrainBatch, build_pretrain_loader, check_banks
from llava_ov.pretrain.evaluate import format_probe_table, probe_export
from llava_ov.pretrain.heads import HeadSet
from llava_ov.train import build as B
from llava_ov.train import checkpoint as C
from llava_ov.train import distributed as D
from llava_ov.train.loop import Task
from llava_ov.train.metrics import MetricsLogger
from llava_ov.train.optim import no_decay

logger = logging.getLogger("llava_ov.pretrain")
STAGE = "pretrain"
INPUT_MODES = (
    "codec",
    "frames",
    "collage",
    "image",
    "precomputed",
)  # counted per step (same keys on every rank)


class PooledEncoder(nn.Module):
    """The engine's module: packed patches → pooled embeddings [B, D]."""

    def __init__(self, encoder: OVEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, pixels: torch.Tensor, positions: torch.Tensor, cu_seqlens: torch.Tensor
    ) -> torch.Tensor:
        return self.encoder(pixels, positions, cu_seqlens, return_pooled=True, validate=False).pooled


def pretrain_data_config(cfg: PretrainConfig):
    data = load_data_config(B.resolve_path(cfg.data_config))
    data = merge_config(data, cfg.data)
    if not data.sources:
        raise ConfigError("the pretraining data config has no sources")
    if data.max_samples is None:
        raise ConfigError("data.max_samples (samples per micro-batch and rank) must be set for pretraining")
    return data


class PretrainTask(Task):
    global_loss = True

    def __init__(self, cfg: PretrainConfig) -> None:
        cfg.validate()
        self.cfg, self.name, self.stage = cfg, STAGE, cfg.pretrain
        self.data_cfg = pretrain_data_config(cfg)
        self.head_cfgs = cfg.heads
        names = list(self.head_cfgs)
        known = {s.name for s in self.data_cfg.sources}
        for name, h in self.head_cfgs.items():
            if bad := sorted(set(h.sources) - known):
                raise ConfigError(
                    f"heads.{name}.sources names unknown source(s) {bad}; sources: {sorted(known)}"
                )
        catch_all = [n for n, h in self.head_cfgs.items() if not h.sources]
        self.head_of_source = []
        for s in self.data_cfg.sources:
            owner = [n for n, h in self.head_cfgs.items() if s.name in h.sources] or catch_all
            if not owner:
                raise ConfigError(f"no head serves source {s.name!r}")
            self.head_of_source.append(names.index(owner[0]))

    # ----------------------------------------------------------------- build

    def build(self, env: D.DistEnv) -> None:
        cfg = self.cfg
        B.prepare(self.data_cfg, env)
        self.banks = [ConceptBank(B.resolve_path(h.bank)) for h in self.head_cfgs.values()]
        torch.manual_seed(cfg.seed)
        enc = cfg.encoder
        if enc.init_from:
            encoder = OVEncoder.from_pretrained(enc.init_from, **enc.overrides)
        else:
            encoder = OVEncoder(get_config(enc.size, **enc.overrides))
        if encoder.head is None:
            raise ConfigError("encoder pretraining needs the pooling head (use_head: true)")
        self.model = PooledEncoder(encoder)
        sizes = {n: b.num_centres for n, b in zip(self.head_cfgs, self.banks)}
        o = self.stage.optim
        self.heads = HeadSet(
            self.head_cfgs,
            sizes,
            encoder.config.hidden_size,
            o.lr,
            tuple(o.betas),
            o.eps,
            env.rank,
            env.world_size,
            cfg.seed,
        ).to(env.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        check_banks(self.data_cfg, self.banks, self.head_of_source)

    def param_groups(self) -> list[dict[str, Any]]:
        o = self.stage.optim
        decay, plain = [], []
        for n, p in self.model.named_parameters():
            (plain if no_decay(n, p) else decay).append(p)
        groups = [
            {"name": "encoder", "params": decay, "weight_decay": o.weight_decay},
            {"name": "encoder/no_decay", "params": plain, "weight_decay": 0.0},
        ]
        return [g | {"lr": o.lr, "base_lr": o.lr} for g in groups if g["params"]]

    def make_loader(self, env: D.DistEnv, resume: dict[str, Any] | None) -> Any:
        return build_pretrain_loader(
            self.data_cfg,
            self.banks,
            self.head_of_source,
            self.cfg.mix,
            self.data_cfg.max_samples,
            env.rank,
            env.world_size,
            resume,
        )

    # ----------------------------------------------------------------- step

    def weight(self, batch: PretrainBatch) -> float:
        return float(batch.num_samples)

    def forward(self, engine: Any, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        p = batch.packed.to(engine.device)
        pooled = engine(p.pixels, p.positions, p.cu_seqlens)
        heads, labels = batch.heads.to(pooled.device), batch.labels.to(pooled.device)
        loss, logs = pooled.sum() * 0.0, {}
        gas = self.stage.grad_accum
        for i, name in enumerate(self.heads.names):  # every head on every rank: the softmax is collective
            rows = (heads == i).nonzero().flatten()
            out = self.heads.heads[name](pooled[rows], labels[rows], self.heads.generator)
            loss = loss + self.head_cfgs[name].weight * out.loss
            logs[f"loss/{name}"] = float(out.loss.detach()) / gas
        return loss, logs

    def counts(self, batch: PretrainBatch) -> dict[str, float]:
        out = {"samples": batch.num_samples, "patches": batch.num_patches} | {
            f"mode/{m}": 0 for m in INPUT_MODES
        }
        for mode in batch.modes:
            out[f"mode/{mode}"] = out.get(f"mode/{mode}", 0) + 1
        return out

    def step_record(self, sums: dict[str, float], seconds: float, env: D.DistEnv) -> dict[str, Any]:
        n = max(sums.get("samples", 0), 1)
        return {
            "samples": int(sums.get("samples", 0)),
            "samples_per_s": sums.get("samples", 0) / seconds,
            "patches_per_sample": sums.get("patches", 0) / n,
            **{k: v / n for k, v in sums.items() if k.startswith("mode/") and v},
        }

    def extra_step(self, lr_factor: float, env: D.DistEnv) -> dict[str, float]:
        return self.heads.step(lr_factor, env.world_size * self.stage.grad_accum)

    # ----------------------------------------------------------------- checkpoints, export

    def check_world_size(self, state: dict[str, Any], env: D.DistEnv) -> None:
        """Another world size is allowed: the heads re-shard (see :class:`HeadSet`)."""

    def save_extra(self, path: Path, env: D.DistEnv) -> None:
        self.heads.save(path)

    def load_extra(self, path: Path, env: D.DistEnv, state: dict[str, Any]) -> None:
        self.heads.load(path, int(state["world_size"]))

    def describe(self, env: D.DistEnv) -> str:
        sizes = ", ".join(
            f"{n}: {h.num_classes} centres ({h.num_local} here, {h.num_sample()} scored per step)"
            for n, h in self.heads.heads.items()
        )
        return f"stage {self.name}: encoder {self.params / 1e6:.2f}M parameters; heads {sizes}"

    def export(self, engine: Any, env: D.DistEnv, final: Path) -> None:
        D.barrier()
        if env.is_main:
            tmp = final.with_name(final.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            self.model.encoder.save_pretrained(tmp)
            (tmp / "pretrain.json").write_text(
                json.dumps(
                    {
                        "heads": {
                            n: {"bank": str(b.root), "num_centres": b.num_centres}
                            for n, b in zip(self.head_cfgs, self.banks)
                        },
                        "steps": self.stage.max_steps,
                    },
                    indent=1,
                )
            )
            C.replace_folder(tmp, final)
        D.barrier()

    def release(self) -> None:
        del self.model, self.heads

    def evaluate(self, final: Path, env: D.DistEnv, metrics: MetricsLogger) -> dict[str, Any] | None:
        if not self.cfg.probe.enabled:
            return None
        summary = None
        if env.is_main:
            summary = probe_export(final, self.cfg, Path(self.cfg.output_dir) / self.name / "probe.json")
            metrics.write("attentive probes on held-out clips, pretrained vs random init:")
            metrics.write(format_probe_table(summary))
            metrics.summary(
                {
                    f"probe/{task}/{kind}": r[kind]["accuracy"]
                    for task, r in summary["tasks"].items()
                    for kind in ("pretrained", "random")
                }
            )
        D.barrier()
        return summary


__all__ = ["STAGE", "PooledEncoder", "PretrainTask", "pretrain_data_config"]
