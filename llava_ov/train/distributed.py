"""The one module that talks to DeepSpeed and torch.distributed.

* :func:`init_distributed`: process group (nccl on GPU, gloo on CPU), device, precision (bf16 on GPU,
  fp32 on CPU). Works under the ``deepspeed`` / ``torchrun`` launchers and as a plain single process
  (the rendezvous variables get single-process defaults).
* :func:`deepspeed_config`: the engine config as a dict (ZeRO-0..3 presets), with a JSON file and a
  dict of overrides merged on top; values ``"auto"`` in those keep the generated value.
* :func:`build_engine`, :func:`save_checkpoint` / :func:`load_checkpoint`, :func:`gathered_params`
  (full parameters under ZeRO-3, e.g. for an export) and small collectives.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from encoder.typed_config import ConfigError
from llava_ov.train.config import DeepSpeedConfig

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine as Engine
else:
    Engine = Any  # deepspeed is imported only when an engine is built

NEVER = 1 << 30  # steps_per_print: the trainer does its own logging


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    dtype: torch.dtype  # training precision of the engine

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def child_job_env() -> dict[str, str]:
    """This process's environment without its rendezvous settings, for a training run started as a job
    of its own (an inherited MASTER_PORT may be held by this process's own process group)."""
    return {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}


def _single_process_env() -> bool:
    """Rendezvous defaults for ``python scripts/train_lmm.py`` without a launcher; True when the port was
    picked here (a free port found now can be taken by another process before the store binds it)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return False
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" in os.environ:
        return False
    os.environ["MASTER_PORT"] = str(_free_port())
    return True


def init_distributed(cfg: DeepSpeedConfig) -> DistEnv:
    """Initialise (once) the process group and pick device and precision."""
    import deepspeed

    own_port = _single_process_env()
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    for attempt in range(5):
        if dist.is_initialized():
            break
        try:
            deepspeed.init_distributed(dist_backend=backend)
        except dist.DistNetworkError as e:  # the port we picked was taken in between: pick another
            if not own_port or "EADDRINUSE" not in str(e) or attempt == 4:
                raise
            os.environ["MASTER_PORT"] = str(_free_port())
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistEnv(
        dist.get_rank(),
        dist.get_world_size(),
        local_rank,
        device,
        backend,
        torch.bfloat16 if bf16 else torch.float32,
    )


def zero_section(stage: int) -> dict[str, Any]:
    """ZeRO presets: 2 shards optimizer state + gradients, 3 also parameters (16-bit gather on save)."""
    section: dict[str, Any] = {"stage": stage}
    if stage >= 2:
        section |= {
            "contiguous_gradients": True,
            "overlap_comm": torch.cuda.is_available(),
            "reduce_bucket_size": 5e7,
            "allgather_bucket_size": 5e7,
        }
    if stage == 3:
        section |= {
            "stage3_gather_16bit_weights_on_model_save": True,
            "stage3_param_persistence_threshold": 1e5,
            "stage3_prefetch_bucket_size": 5e7,
            "stage3_max_live_parameters": 1e9,
        }
    return section


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update; ``"auto"`` values keep the base value."""
    out = dict(base)
    for key, value in update.items():
        if value == "auto" and key in out:
            continue
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def deepspeed_config(cfg: DeepSpeedConfig, env: DistEnv, grad_accum: int, grad_clip: float) -> dict[str, Any]:
    """The DeepSpeed engine config: one packed micro-batch per rank, ``grad_accum`` of them per step."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero_section(cfg.zero_stage),
        "zero_allow_untested_optimizer": True,  # torch AdamW with per-module groups
        "bf16": {"enabled": env.dtype == torch.bfloat16},
        "steps_per_print": NEVER,
        "wall_clock_breakdown": False,
    }
    if cfg.config_file:
        path = Path(cfg.config_file)
        if not path.is_file():
            raise ConfigError(f"deepspeed.config_file not found: {path}")
        config = _merge(config, json.loads(path.read_text()))
    return _merge(config, cfg.overrides)


def build_engine(model: nn.Module, optimizer: torch.optim.Optimizer, config: dict[str, Any]) -> Engine:
    """``deepspeed.initialize`` with our optimizer (param groups carry the per-module LRs)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def zero_stage(engine: Any) -> int:
    return int(engine.zero_optimization_stage()) if hasattr(engine, "zero_optimization_stage") else 0


@contextlib.contextmanager
def gathered_params(model: nn.Module, engine: Any = None) -> Iterator[None]:
    """Full (read-only) parameters on every rank inside the block; a no-op below ZeRO-3."""
    if engine is None or zero_stage(engine) < 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def save_checkpoint(engine: Any, root: Path, tag: str) -> None:
    """DeepSpeed checkpoint (module + optimizer shards) of the trainable parameters; every rank calls it."""
    engine.save_checkpoint(str(root), tag=tag, exclude_frozen_parameters=True)


def load_checkpoint(engine: Any, root: Path, tag: str, module_only: bool = False) -> None:
    """Restore the engine (``module_only``: the weights alone, e.g. when the optimizer's ZeRO partitions
    were written by another world size)."""
    path, _ = engine.load_checkpoint(
        str(root),
        tag=tag,
        load_module_strict=False,
        load_optimizer_states=not module_only,
        load_lr_scheduler_states=False,
        load_module_only=module_only,
    )
    if path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint {root}/{tag}")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum of each value over ranks (float64 on CPU: exact for counts, gloo-friendly)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_reduce_named(values: Mapping[str, float]) -> dict[str, float]:
    """Each named value summed over ranks. Every rank must pass the same names: a checksum of the sorted
    names is reduced along with the values, so a rank with other names fails loudly instead of summing
    one quantity into another."""
    keys = sorted(values)
    tag = float(zlib.crc32("\0".join(keys).encode()))
    *sums, tags = all_reduce_sum([*(values[k] for k in keys), tag])
    world = dist.get_world_size() if dist.is_initialized() else 1
    if tags != tag * world:
        raise RuntimeError(f"ranks reduce different quantities (this rank: {keys})")
    return dict(zip(keys, sums))


def all_gather_object(obj: Any) -> list[Any]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def peak_memory_gb(device: torch.device) -> float:
    """CUDA max allocated on GPU; the process's peak RSS on CPU (VmHWM where /proc has it: it is reset
    by exec, unlike ru_maxrss, which a process inherits from the parent it was forked from)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "RENDEZVOUS_VARS",
    "child_job_env",
    "DistEnv",
    "Engine",
    "all_gather_object",
    "all_reduce_named",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "build_engine",
    "deepspeed_config",
    "device_name",
    "gathered_params",
    "init_distributed",
    "load_checkpoint",
    "peak_memory_gb",
    "save_checkpoint",
    "shutdown",
    "zero_section",
    "zero_stage",
]
