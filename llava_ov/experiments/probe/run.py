"""One probe run: clips → budgeted patches → frozen tower tokens (once, in memory) → attentive probe.

:func:`run_probe` returns the result dict (``tower``, ``mode``, ``budget``, ``llm_tokens``,
``tower_tokens``, ``top1``, ``per_class``, ``chance``, ``n_train``, ``n_heldout``, ``seconds`` and
details); ``chance`` is the share of the most frequent held-out class (1 / C for balanced classes).
A clip that cannot be decoded is skipped, counted (``skipped``) and logged, one line each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from encoder.codec import CodecConfig, PatchSelection, VideoDecodeError, patchify
from encoder.typed_config import merge_config, to_dict
from llava_ov.data.dataset import MediaBatch, pack_media
from llava_ov.data.stats import Skipped
from llava_ov.experiments.probe.config import ProbeConfig
from llava_ov.experiments.probe.data import ClipRef, load_clips
from llava_ov.experiments.probe.model import AttentiveProbe
from llava_ov.infer.engine import resolve_device
from llava_ov.model.budget import MediaPlan, media_plan
from llava_ov.model.towers import TowerSpec, VisionTower, build_tower, tower_spec
from llava_ov.report import format_table as render_table
from llava_ov.train.schedule import lr_factor

logger = logging.getLogger("llava_ov.probe")


@dataclass
class Features:
    """Tower tokens of the usable clips of one split, packed: ``tokens[offsets[i]:offsets[i + 1]]``."""

    tokens: Tensor  # float32 [N, D]
    positions: Tensor  # long [N, 3] (t, h, w) on the tower's token grid
    offsets: Tensor  # long [C + 1]
    labels: Tensor  # long [C]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(tokens, positions, seq_ids, labels) of the clips ``index``."""
        spans = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in index.tolist()]
        rows = torch.cat([torch.arange(a, b) for a, b in spans])
        seq_ids = torch.repeat_interleave(torch.arange(len(spans)), torch.tensor([b - a for a, b in spans]))
        return self.tokens[rows], self.positions[rows], seq_ids, self.labels[index]


def plan_and_codec(cfg: ProbeConfig) -> tuple[TowerSpec, MediaPlan, CodecConfig]:
    """The tower's spec, the budget rule's plan and the codec settings that produce it."""
    spec = tower_spec(cfg.tower)
    plan = media_plan(cfg.media, spec)
    return spec, plan, merge_config(CodecConfig(), plan.codec_overrides(spec.patch_size))


def media_batch(sels: list[PatchSelection], spec: TowerSpec) -> MediaBatch:
    """Selections → the packed tower input (one video media item each)."""
    counter = spec.token_counter()
    return pack_media(sels, ["video"] * len(sels), [counter(s) for s in sels], spec.patch_size)


def patchify_clip(clip: ClipRef, codec: CodecConfig, tmp: str) -> PatchSelection:
    if clip.path is not None:
        return patchify(clip.path, codec)
    path = os.path.join(tmp, "clip" + clip.suffix)
    Path(path).write_bytes(clip.data or b"")
    try:
        return patchify(path, codec)
    except VideoDecodeError as e:
        raise VideoDecodeError(clip.key, e.reason) from None


@torch.no_grad()
def extract_features(
    tower: VisionTower,
    clips: list[ClipRef],
    classes: list[str],
    codec: CodecConfig,
    batch: int = 8,
    progress: bool = True,
    desc: str = "features",
    dtype: torch.dtype = torch.float32,
) -> tuple[Features, list[Skipped]]:
    """Patchify every clip and run the frozen tower on ``batch`` clips at a time; undecodable clips are
    returned as skip markers."""
    index = {c: i for i, c in enumerate(classes)}
    spec, skipped = tower.spec, []
    tokens, positions, lengths, labels, keys = [], [], [], [], []
    pending: list[tuple[ClipRef, PatchSelection]] = []

    def flush() -> None:
        out = tower(media_batch([s for _, s in pending], spec))
        bounds = out.cu_seqlens.tolist()
        tokens.append(out.features.to(dtype).cpu())
        positions.append(out.positions.long().cpu())
        for (clip, _), a, b in zip(pending, bounds[:-1], bounds[1:]):
            lengths.append(b - a)
            labels.append(index[clip.label])
            keys.append(clip.key)
        pending.clear()

    with tempfile.TemporaryDirectory(prefix="probe_") as tmp:
        for clip in tqdm(clips, desc=desc, unit="clip", disable=not progress):
            try:
                sel = patchify_clip(clip, codec, tmp)
                if len(sel) == 0:
                    raise VideoDecodeError(clip.key, "no patches selected")
            except (VideoDecodeError, OSError) as e:
                skipped.append(Skipped(clip.key, "corrupt_media", str(e)[:300], clip.split))
                continue
            pending.append((clip, sel))
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
    if not keys:
        raise ValueError(f"{desc}: no clip could be used ({len(skipped)} skipped)")
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    return Features(torch.cat(tokens), torch.cat(positions), offsets, torch.tensor(labels), keys), skipped


def train_probe(
    train: Features, num_classes: int, cfg: ProbeConfig, device: torch.device, progress: bool = True
) -> tuple[AttentiveProbe, list[float]]:
    """AdamW on cross-entropy, linear warmup then cosine decay; returns the probe and per-step losses."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        probe = AttentiveProbe(train.tokens.shape[1], num_classes, cfg.heads, cfg.pos_embed).to(device)
    decay = [p for p in probe.parameters() if p.ndim >= 2]  # matrices; not biases, norms or the query
    other = [p for p in probe.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.steps or cfg.epochs * per_epoch
    warmup = int(cfg.warmup * total)
    # the trainer's schedule; the cosine ends at 0 one step after the last one (``total + 1`` steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total + 1, warmup))
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    order: list[int] = []
    probe.train()
    bar = tqdm(range(total), desc="probe", unit="step", disable=not progress)
    for _ in bar:
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(train), generator=gen).tolist()
        idx, order = torch.tensor(order[: cfg.batch_size]), order[cfg.batch_size :]
        x, pos, seq, y = train.batch(idx)
        logits = probe(x.to(device), seq.to(device), len(idx), pos.to(device))
        loss = torch.nn.functional.cross_entropy(logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return probe.eval(), losses


@torch.no_grad()
def predict(probe: AttentiveProbe, feats: Features, device: torch.device, batch: int = 64) -> Tensor:
    out = []
    for start in range(0, len(feats), batch):
        idx = torch.arange(start, min(start + batch, len(feats)))
        x, pos, seq, _ = feats.batch(idx)
        out.append(probe(x.to(device), seq.to(device), len(idx), pos.to(device)).argmax(-1).cpu())
    return torch.cat(out)


def accuracy(pred: Tensor, labels: Tensor, classes: list[str]) -> tuple[float, dict[str, float | None]]:
    """Top-1 and per-class accuracy (``None`` for a class without held-out clips)."""
    correct = pred == labels
    per_class = {}
    for i, name in enumerate(classes):
        mask = labels == i
        per_class[name] = round(float(correct[mask].float().mean()), 4) if mask.any() else None
    return round(float(correct.float().mean()), 4), per_class


def _log_skips(skips: list[Skipped]) -> None:
    for s in skips:
        logger.warning("skipped clip %s [%s]: %s (%s)", s.key, s.source or "?", s.reason, s.detail)


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """The whole run (see the module docstring); deterministic for a seed, device and thread count.
    ``cfg.threads`` applies during the run only."""
    cfg.validate()
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(before)


def _run(cfg: ProbeConfig) -> dict[str, Any]:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    spec, plan, codec = plan_and_codec(cfg)
    data = load_clips(cfg.data, cfg.synthetic, cfg.progress)
    _log_skips(data.skipped)
    logger.info(
        "probe %s: %s, %d LLM / %d tower tokens per clip; %d classes, %d train / %d held-out (%s)",
        cfg.run_name,
        plan.mode,
        plan.llm_tokens,
        plan.tower_tokens,
        len(data.classes),
        len(data.clips["train"]),
        len(data.clips["heldout"]),
        data.root,
    )
    t_data = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        tower = build_tower(cfg.tower)
    tower = tower.to(device).eval().requires_grad_(False)
    feats, skips = {}, list(data.skipped)
    for split in ("train", "heldout"):
        feats[split], bad = extract_features(
            tower,
            data.clips[split],
            data.classes,
            codec,
            cfg.extract_batch,
            cfg.progress,
            f"{cfg.tower.name} {split}",
            getattr(torch, cfg.feature_dtype),
        )
        _log_skips(bad)
        skips += bad
    del tower
    t_extract = time.perf_counter()
    probe, losses = train_probe(feats["train"], len(data.classes), cfg, device, cfg.progress)
    t_train = time.perf_counter()
    held_pred = predict(probe, feats["heldout"], device)
    top1, per_class = accuracy(held_pred, feats["heldout"].labels, data.classes)
    train_top1, _ = accuracy(predict(probe, feats["train"], device), feats["train"].labels, data.classes)
    held = Counter(feats["heldout"].labels.tolist())
    lengths = torch.diff(feats["train"].offsets).float()
    return {
        "name": cfg.run_name,
        "tower": cfg.tower.name,
        "tower_path": cfg.tower.path,
        "mode": plan.mode,
        "budget": cfg.media.budget,
        "llm_tokens": plan.llm_tokens,
        "tower_tokens": plan.tower_tokens,
        "top1": top1,
        "per_class": per_class,
        "chance": round(max(held.values()) / len(feats["heldout"]), 4),
        "n_train": len(feats["train"]),
        "n_heldout": len(feats["heldout"]),
        "seconds": round(time.perf_counter() - start, 2),
        "train_top1": train_top1,
        "final_loss": round(float(np.mean(losses[-10:])), 4),
        "classes": data.classes,
        "probe_tokens": round(float(lengths.mean()), 1),
        "skipped": dict(Counter(s.reason for s in skips)),
        "skipped_keys": [s.key for s in skips],
        "plan": dataclasses.asdict(plan) | {"patch_size": spec.patch_size},
        "timings": {
            "data": round(t_data - start, 2),
            "extract": round(t_extract - t_data, 2),
            "train": round(t_train - t_extract, 2),
        },
        "data_root": data.root,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "config": to_dict(cfg),
    }


def write_result(result: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


COLUMNS = (
    "tower",
    "mode",
    "budget",
    "llm_tokens",
    "tower_tokens",
    "top1",
    "chance",
    "n_train",
    "n_heldout",
    "seconds",
)


def summary_record(result: dict[str, Any]) -> dict[str, Any]:
    """The fields of a result a comparison keeps (``comparison.json`` of ``scripts/probe.py --compare``)."""
    return {k: result[k] for k in ("name", *COLUMNS[:6], "per_class", *COLUMNS[6:])}


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of results (one row each), then the per-class accuracies."""
    lines = [render_table(COLUMNS, [[str(r.get(c, "")) for c in COLUMNS] for r in results])]
    for r in results:
        per = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in r["per_class"].items())
        skipped = sum(r.get("skipped", {}).values())
        lines.append(f"{r['name']}: per class {per}; skipped {skipped}")
    return "\n".join(lines)


__all__ = [
    "COLUMNS",
    "Features",
    "accuracy",
    "extract_features",
    "format_table",
    "media_batch",
    "plan_and_codec",
    "patchify_clip",
    "predict",
    "run_probe",
    "summary_record",
    "train_probe",
    "write_result",
]
