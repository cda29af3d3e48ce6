"""Training metrics: throughput / MFU arithmetic, and the logger (console, metrics.jsonl, wandb, PNG).

MFU = achieved model FLOPs / (``step_time · world_size · peak``), the FLOPs counted by
:mod:`llava_ov.train.flops` (matmuls per row, within-sample attention, backward multiples). Peak
(dense bf16, per device) comes from ``log.peak_tflops`` or, on GPU, :data:`PEAK_TFLOPS` by device
name; on CPU without a configured peak MFU is ``None`` (logged as n/a).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from llava_ov.train.config import LogConfig

logger = logging.getLogger("llava_ov.train")

#: Dense bf16 peak TFLOP/s per device, matched by substring of ``torch.cuda.get_device_name``
#: (first match wins, so the more specific names come first).
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
)


def peak_flops(device_name: str, configured_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device: the configured value, else the table (GPU names), else None."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def mfu(flops: float, seconds: float, world_size: int, peak: float | None) -> float | None:
    if peak is None or seconds <= 0:
        return None
    return flops / (seconds * world_size * peak)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


class MetricsLogger:
    """Rank 0 writes ``metrics.jsonl`` (appended, so resumed runs continue it), wandb and the console,
    and saves the resolved run config as ``config.yaml`` next to it. Other ranks hold a logger that does
    nothing."""

    CONSOLE_KEYS = (
        "loss",
        "grad_norm",
        "tokens_per_s",
        "visual_tokens_per_s",
        "samples_per_s",
        "mfu",
        "data_wait_s",
        "peak_mem_gb",
        "skipped",
    )

    def __init__(self, cfg: LogConfig, output_dir: Path, run_config: dict[str, Any], enabled: bool) -> None:
        self.cfg, self.enabled = cfg, enabled
        self.path = output_dir / "metrics.jsonl"
        self.bar: Any = None
        self.wandb: Any = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))
        if cfg.wandb_mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.wandb_project,
                name=cfg.wandb_name,
                mode=cfg.wandb_mode,
                dir=str(output_dir),
                config=run_config,
                resume="allow",
            )

    def start_stage(self, stage: str, start: int, total: int) -> None:
        if not self.enabled:
            return
        logger.info("stage %s: steps %d..%d", stage, start, total)
        if self.cfg.progress:
            self.bar = tqdm(total=total, initial=start, desc=stage, unit="step", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log(
                {
                    f"{record['stage']}/{k}": v
                    for k, v in record.items()
                    if isinstance(v, (int, float)) and v is not None
                },
                step=record["global_step"],
            )
        step = record["step"]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            self.bar.update(1)
        if step % self.cfg.every == 0 or step == record.get("max_steps"):
            lrs = " ".join(f"lr[{k[3:]}]={v:.2e}" for k, v in record.items() if k.startswith("lr/"))
            line = " ".join(f"{k}={_fmt(record.get(k))}" for k in self.CONSOLE_KEYS if k in record)
            self.write(f"[{record['stage']} {step}/{record.get('max_steps')}] {line} {lrs}")

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def end_stage(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in values.items() if isinstance(v, (int, float, str))})

    def close(self) -> None:
        self.end_stage()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


class StepTimer:
    """Wall time of a step, split into data wait and the rest."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.data_wait = 0.0

    def wait(self, seconds: float) -> None:
        self.data_wait += seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl``; a step logged twice (a resumed run redid it) keeps its last record."""
    if not path.is_file():
        return []
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            latest[(rec["stage"], rec["step"])] = rec
    return sorted(latest.values(), key=lambda r: (r["global_step"], r["step"]))


def smooth(values: Iterable[float], alpha: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = alpha * avg + (1 - alpha) * v
        out.append(avg / (1 - alpha**i))
    return out


def plot_loss(
    metrics_path: Path,
    out_path: Path,
    stages: list[str],
    title: str = "LMM training loss",
    ylabel: str = "training loss (token mean)",
    reference: tuple[float, str] | None = None,
) -> Path | None:
    """Loss (raw + smoothed) against the run-wide step, one colour per stage; ``reference``: a dashed
    horizontal line (value, label), e.g. the chance level; PNG via matplotlib Agg."""
    records = [r for r in read_metrics(metrics_path) if r["stage"] in stages]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, stage in enumerate(dict.fromkeys(r["stage"] for r in records)):
        rs = [r for r in records if r["stage"] == stage]
        x, y = [r["global_step"] for r in rs], [r["loss"] for r in rs]
        color = f"C{i}"
        ax.plot(x, y, color=color, alpha=0.3, linewidth=0.8)
        ax.plot(x, smooth(y), color=color, linewidth=1.8, label=f"{stage} (final {smooth(y)[-1]:.3f})")
        ax.axvline(x[0], color=color, linestyle=":", linewidth=0.8)
    if reference is not None:
        ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xlabel("optimizer step (all stages)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log" if all(r["loss"] > 0 for r in records) and _spread(records) > 8 else "linear")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return save_figure(fig, out_path)


def save_figure(fig, path: Path) -> Path:
    """Lay out, write ``path`` as a PNG (folders created) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _spread(records: list[dict[str, Any]]) -> float:
    losses = [r["loss"] for r in records if r["loss"] > 0 and math.isfinite(r["loss"])]
    return max(losses) / min(losses) if losses else 1.0


__all__ = [
    "PEAK_TFLOPS",
    "MetricsLogger",
    "StepTimer",
    "mfu",
    "peak_flops",
    "plot_loss",
    "read_metrics",
    "save_figure",
    "smooth",
]
