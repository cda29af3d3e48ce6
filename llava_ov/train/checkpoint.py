"""Resumable checkpoints and named stage exports (for every task of :mod:`llava_ov.train.loop`).

Layout of a run::

    {output_dir}/tokenizer/                      the synthetic tokenizer (when built)
    {output_dir}/metrics.jsonl                   one record per optimizer step, all stages
    {output_dir}/{stage}/checkpoints/step_NNNNNNNN/
        (DeepSpeed files)                        trainable parameters + optimizer shards
        rank_NNNNN.pt                            per rank: RNG states, data-stream position, data stats
        (task files)                             state outside the engine (e.g. sharded partial-FC centres)
        trainer_state.json                       written last by rank 0: the checkpoint is complete
    {output_dir}/{stage}/final/                  model.save_pretrained export = next stage's init_from
    {output_dir}/{stage}/eval.json               held-out accuracy of the export

Exact resume restores: the parameters and AdamW state (DeepSpeed), the step (the LR is a pure
function of it), every rank's RNG states and data-stream position (see :mod:`llava_ov.data.mixture`).
A checkpoint folder without ``trainer_state.json`` (a run killed while writing it) is never resumed
from: ``auto`` falls back to the newest complete one, with a warning.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llava_ov.model.checkpoint import CONFIG_FILE
from llava_ov.train import distributed as D

logger = logging.getLogger("llava_ov.train")
CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE_FILE = "trainer_state.json"
_TAG_RE = re.compile(r"^step_(\d{8})$")


def stage_dir(output_dir: str | Path, stage: str) -> Path:
    return Path(output_dir) / stage


def final_dir(output_dir: str | Path, stage: str) -> Path:
    return stage_dir(output_dir, stage) / FINAL


def is_exported(path: str | Path) -> bool:
    """An LMM export (``LlavaOVModel.save_pretrained``)."""
    return (Path(path) / CONFIG_FILE).is_file()


def is_complete_export(path: str | Path) -> bool:
    """A stage's export folder exists: exports are written to ``final.tmp`` and renamed when complete."""
    return Path(path).is_dir()


def replace_folder(tmp: Path, final: Path) -> None:
    """Publish a finished export written to ``tmp`` as ``final`` (the old one removed first), so a
    stage's export exists only when complete (:func:`is_complete_export`)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def tag_of(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` (those with a trainer state), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _TAG_RE.match(path.name)
        if m and (path / STATE_FILE).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def find_resume(resume: str, root: Path) -> Path | None:
    """``auto``: the latest complete checkpoint (or None); ``none``: None; else that directory."""
    if resume == "none":
        return None
    if resume == "auto":
        found = list_checkpoints(root)
        newest = found[-1][0] if found else -1
        partial = (
            sorted(
                p.name
                for p in root.iterdir()
                if _TAG_RE.match(p.name) and int(p.name[5:]) > newest and not (p / STATE_FILE).is_file()
            )
            if root.is_dir()
            else []
        )
        if partial:
            logger.warning(
                "checkpoint(s) %s under %s are incomplete (no %s); resuming from %s",
                partial,
                root,
                STATE_FILE,
                found[-1][1] if found else "the start",
            )
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"checkpoint.resume={resume!r} is not a complete checkpoint (no {STATE_FILE})"
        )
    return path


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(
    engine: Any,
    env: D.DistEnv,
    root: Path,
    step: int,
    state: dict[str, Any],
    rank_state: dict[str, Any],
    keep: int,
    extra: Any = None,
) -> Path:
    """Collective: DeepSpeed shards, this rank's state, the task's ``extra(path, env)`` files, then (rank 0)
    the trainer state — the completion marker — and pruning."""
    tag = tag_of(step)
    D.save_checkpoint(engine, root, tag)
    path = root / tag
    path.mkdir(parents=True, exist_ok=True)
    torch.save(rank_state | {"rng": rng_state()}, path / f"rank_{env.rank:05d}.pt")
    if extra is not None:
        extra(path, env)
    D.barrier()
    if env.is_main:
        tmp = path / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state | {"step": step, "world_size": env.world_size}, indent=1))
        tmp.replace(path / STATE_FILE)
        for _, old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier()
    return path


def load(
    engine: Any, env: D.DistEnv, path: Path, check_world_size: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Collective: restore the engine from ``path``; returns (trainer state, this rank's state: empty when
    the checkpoint was written by another world size and ``check_world_size(state, env)`` allows it).
    RNG states are restored by the caller (:func:`set_rng_state`) once everything else is built."""
    state = json.loads((path / STATE_FILE).read_text())
    if check_world_size is not None:
        try:
            check_world_size(state, env)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    elif state["world_size"] != env.world_size:
        raise ValueError(
            f"{path} was written by {state['world_size']} ranks; exact resume needs the same "
            f"world size (running {env.world_size})"
        )
    same = state["world_size"] == env.world_size
    if not same:
        logger.warning(
            "%s was written by %d ranks, this run has %d: the weights are restored, the engine's "
            "optimizer moments and the data-stream positions start afresh",
            path,
            state["world_size"],
            env.world_size,
        )
    D.load_checkpoint(engine, path.parent, path.name, module_only=not same)
    rank_file = path / f"rank_{env.rank:05d}.pt"
    rank_state = torch.load(rank_file, weights_only=False) if same else {}
    return state, rank_state


__all__ = [
    "CHECKPOINTS",
    "FINAL",
    "STATE_FILE",
    "final_dir",
    "find_resume",
    "is_complete_export",
    "is_exported",
    "list_checkpoints",
    "replace_folder",
    "load",
    "rng_state",
    "save",
    "set_rng_state",
    "stage_dir",
    "tag_of",
]
