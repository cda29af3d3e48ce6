"""The partial-FC heads of a pretraining run, outside the DeepSpeed engine.

Each head's centres are sharded over the ranks (:class:`encoder.pretrain.PartialFC`), so they must not
be replicated or averaged like the backbone: the heads have their own AdamW (per-head LR and weight
decay, the trainer's LR schedule), gradient clipping over the global norm of the sharded centres,
and their own checkpoint files. A checkpoint stores, per head and rank, the rank's rows of the bank
(centres and AdamW moments) with their global range, so a run resumed on another number of ranks
reassembles each new shard from the old ones: every centre is kept.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from encoder.pretrain import PartialFC
from encoder.typed_config import ConfigError
from llava_ov.pretrain.config import HeadConfig
from llava_ov.train.optim import set_lr


def init_rows(start: int, end: int, dim: int, seed: int, block: int = 4096) -> torch.Tensor:
    """Rows ``start..end`` of a N(0, 0.01²) bank drawn in fixed blocks of ``block`` rows, each from its own
    seed: the same bank whatever the sharding, and no rank ever holds more than its rows plus a block."""
    out = []
    for b in range(start // block, (end - 1) // block + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        rows = torch.randn(block, dim, generator=g) * 0.01
        lo, hi = max(start, b * block) - b * block, min(end, (b + 1) * block) - b * block
        out.append(rows[lo:hi])
    return torch.cat(out)


class HeadSet:
    """``heads[name]``: a PartialFC over that head's bank, this rank's shard; one AdamW per head."""

    def __init__(
        self,
        configs: dict[str, HeadConfig],
        sizes: dict[str, int],
        dim: int,
        base_lr: float,
        betas: tuple[float, float],
        eps: float,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        self.names = list(configs)
        self.configs, self.rank, self.world_size = configs, rank, world_size
        self.heads: dict[str, PartialFC] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for i, name in enumerate(self.names):
            c = configs[name]
            head = PartialFC(
                sizes[name], dim, c.sample_rate, c.scale, c.margin, c.num_labels, rank, world_size
            )
            with torch.no_grad():
                head.weight.copy_(init_rows(head.start, head.end, dim, seed * 7919 + i))
            self.heads[name] = head
            lr = base_lr if c.lr is None else c.lr
            self.optimizers[name] = torch.optim.AdamW(
                [
                    {
                        "params": [head.weight],
                        "lr": lr,
                        "base_lr": lr,
                        "name": f"head/{name}",
                        "weight_decay": c.weight_decay,
                    }
                ],
                lr=lr,
                betas=betas,
                eps=eps,
            )
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)

    def to(self, device: torch.device) -> HeadSet:
        for h in self.heads.values():
            h.to(device)
        return self

    def step(self, lr_factor: float, grad_divisor: float) -> dict[str, float]:
        """Scale the centre gradients (the loop's loss scale is meant for the engine), clip, step, zero."""
        lrs = {}
        for name in self.names:
            head, opt, c = self.heads[name], self.optimizers[name], self.configs[name]
            g = head.weight.grad
            if g is not None:
                g.div_(grad_divisor)
                if c.grad_clip > 0:
                    sq = (g.float() ** 2).sum()
                    if self.world_size > 1:
                        dist.all_reduce(sq)
                    norm = math.sqrt(float(sq))
                    if norm > c.grad_clip:
                        g.mul_(c.grad_clip / (norm + 1e-6))
            lrs |= set_lr(opt, lr_factor)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return lrs

    # ----------------------------------------------------------------- checkpoints (re-shardable)

    def state(self, name: str) -> dict[str, Any]:
        head, opt = self.heads[name], self.optimizers[name]
        st = opt.state.get(head.weight, {})
        return {
            "start": head.start,
            "end": head.end,
            "num_classes": head.num_classes,
            "weight": head.weight.detach().cpu(),
            "exp_avg": st["exp_avg"].cpu() if "exp_avg" in st else None,
            "exp_avg_sq": st["exp_avg_sq"].cpu() if "exp_avg_sq" in st else None,
            "step": float(st["step"]) if "step" in st else 0.0,
        }

    def save(self, path: Path) -> None:
        for name in self.names:
            torch.save(self.state(name), path / f"head_{name}_rank{self.rank:05d}.pt")
        torch.save(self.generator.get_state(), path / f"head_rng_rank{self.rank:05d}.pt")

    def load(self, path: Path, old_world: int) -> None:
        """Restore every head's rows of this rank from the ``old_world`` shard files (any world size)."""
        for name in self.names:
            head, opt = self.heads[name], self.optimizers[name]
            files = [path / f"head_{name}_rank{r:05d}.pt" for r in range(old_world)]
            if missing := [str(f) for f in files if not f.is_file()]:
                raise FileNotFoundError(f"checkpoint {path} lacks head files {missing[:2]}")
            parts = [torch.load(f, weights_only=False) for f in files]
            if parts[0]["num_classes"] != head.num_classes:
                raise ConfigError(
                    f"checkpoint head {name!r} has {parts[0]['num_classes']} centres, the bank "
                    f"{head.num_classes}: the bank changed since the checkpoint"
                )
            rows = {
                k: self._assemble(parts, k, head.start, head.end) for k in ("weight", "exp_avg", "exp_avg_sq")
            }
            with torch.no_grad():
                head.weight.copy_(rows["weight"].to(head.weight.device))
            if rows["exp_avg"] is not None:
                dev = head.weight.device
                opt.state[head.weight] = {
                    "step": torch.tensor(parts[0]["step"]),
                    "exp_avg": rows["exp_avg"].to(dev),
                    "exp_avg_sq": rows["exp_avg_sq"].to(dev),
                }
        rng = path / f"head_rng_rank{self.rank:05d}.pt"
        if old_world == self.world_size and rng.is_file():
            self.generator.set_state(torch.load(rng, weights_only=False))

    @staticmethod
    def _assemble(parts: list[dict[str, Any]], key: str, start: int, end: int) -> torch.Tensor | None:
        if any(p[key] is None for p in parts):
            return None
        pieces = []
        for p in sorted(parts, key=lambda p: p["start"]):
            lo, hi = max(start, p["start"]), min(end, p["end"])
            if lo < hi:
                pieces.append(p[key][lo - p["start"] : hi - p["start"]])
        out = torch.cat(pieces)
        if len(out) != end - start:
            raise ValueError(f"head shards cover {len(out)} of rows {start}..{end}")
        return out


__all__ = ["HeadSet", "init_rows"]
