"""One budget rule for every tower and input mode: ``budget`` = LLM visual tokens per clip.

A tower token covers ``unit = patch_size · tower merge · projector merge`` pixels per side and
``g = frames_per_token`` frames (:class:`llava_ov.model.towers.TowerSpec`). For uniformly sampled
frames (``frames`` mode) with F frames there are ``ceil(F / g)`` frame groups; each gets
``b = floor(budget / ceil(F / g))`` tokens, the largest aspect-preserving grid gh × gw with
gh · gw ≤ b is used at the source's aspect (NaFlex's rule, :func:`encoder.codec.sizing.fit_grid`),
and the frames are resized to (gh · unit, gw · unit). The codec modes (``codec``, ``random``) select
``budget`` patches of one token each out of the dense clip. Images, in every mode, use the same grid
rule with one group: at most ``budget`` tokens at their own aspect.

Equal LLM tokens is not equal tower compute: :attr:`MediaPlan.tower_tokens` is the number of patch
rows the tower's transformer runs on (SigLIP2 with a projector merge of 2 or Qwen3-ViT: 4 per LLM
token); runs log both.

Examples (square 224² source): budget 2048 → SigLIP2 (unit 16) 8 frames at 256² or 32 frames at
128²; Qwen3-ViT (unit 32, 2-frame tubelets) 64 frames at 256²; OV-Encoder codec: 2048 of the 64-frame
clip's patches. Budget 512 → SigLIP2 8 frames at 128², Qwen3-ViT 16 frames at 256².
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

from encoder.codec.sizing import fit_grid
from encoder.typed_config import ConfigError, check_choices
from llava_ov.model.towers.base import TowerSpec

FRAME_CHOICES = (2, 4, 8, 16, 32, 64)
MediaMode = Literal["auto", "codec", "random", "frames"]
MEDIA_MODES: tuple[str, ...] = typing.get_args(MediaMode)


@dataclass
class MediaConfig:
    """The budget rule as a run setting (``media`` in a run config). With ``budget`` set, every
    stage's codec settings are derived from it and the tower's spec (see :func:`media_plan`);
    ``None`` leaves the data config's codec section as it is."""

    budget: int | None = None  # LLM visual tokens per clip
    mode: MediaMode = "auto"  # auto (codec where the tower takes it, else frames) | codec | random | frames
    clip_frames: int = 64  # codec modes: frames decoded on the 64-frame grid
    input_size: int = 224  # codec modes: decoded frame side
    frames: int | None = None  # frames mode: sampled frames (None: 8 per frame group)

    def validate(self) -> None:
        check_choices(self, "media.")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"media.budget must be >= 1, got {self.budget}")


@dataclass(frozen=True, kw_only=True)
class MediaPlan:
    mode: str  # codec | random | frames | image
    num_frames: int  # sampled frames (codec modes: frames decoded; image: 1)
    grid: tuple[int, int]  # LLM tokens per frame group (rows, cols); codec modes: the frame's patch grid
    height: int  # pixels the frames are resized to
    width: int
    llm_tokens: int  # visual tokens the LLM receives (at most ``budget``; frames, image: for this aspect)
    tower_tokens: int  # patch rows the tower runs on
    budget: int = 0  # the LLM tokens a clip or an image may take
    cells: int = 0  # frames: LLM tokens one frame group may take (its grid at the source's aspect)
    unit: int = 0  # pixels per LLM token side in a frame group

    def codec_overrides(self, patch_size: int) -> dict[str, Any]:
        """The :class:`encoder.codec.CodecConfig` updates that produce this plan. Frames keep the
        source's aspect (``decode.aspect="native"``: at most ``cells`` tokens of ``unit`` pixels per
        frame group), as do images (at most ``budget`` tokens); codec modes decode square frames."""
        images = {"image_max_cells": self.budget, "image_cell": self.unit} if self.budget else {}
        if self.mode in ("codec", "random"):
            if self.height != self.width:
                raise ValueError(
                    f"codec modes decode square frames; plan asks for {self.height}x{self.width}"
                )
            return {
                "mode": self.mode,
                "patch_size": patch_size,
                **images,
                "decode": {"num_frames": self.num_frames, "input_size": self.height},
                "select": {"budget": self.llm_tokens},
            }
        decode = {"input_size": self.height}
        if self.cells:
            decode.update(aspect="native", max_cells=self.cells, cell=self.unit)
        return {
            "mode": self.mode,
            "patch_size": patch_size,
            "num_frames": self.num_frames,
            **images,
            "decode": decode,
        }


def plan_frames(
    spec: TowerSpec,
    budget: int,
    num_frames: int,
    projector_merge: int = 1,
    aspect_hw: tuple[int, int] = (1, 1),
) -> MediaPlan:
    """``frames`` mode: ``num_frames`` uniformly sampled frames under ``budget`` LLM tokens."""
    if "frames" not in spec.modes:
        raise ValueError("the tower does not take uniformly sampled frames")
    groups = -(-num_frames // spec.frames_per_token)
    per_group = budget // groups
    if per_group < 1:
        raise ValueError(f"budget {budget} is below one token for each of {groups} frame groups")
    gh, gw = fit_grid(per_group, aspect_hw)
    unit = spec.unit(projector_merge)
    sub = spec.merge * projector_merge  # patches per token side
    rows = groups if spec.frames_per_token > 1 else num_frames
    return MediaPlan(
        mode="frames",
        num_frames=num_frames,
        grid=(gh, gw),
        height=gh * unit,
        width=gw * unit,
        llm_tokens=groups * gh * gw,
        tower_tokens=rows * gh * gw * sub * sub,
        budget=budget,
        cells=per_group,
        unit=unit,
    )


def plan_image(
    spec: TowerSpec, budget: int, projector_merge: int = 1, aspect_hw: tuple[int, int] = (1, 1)
) -> MediaPlan:
    """A still image: one frame group under ``budget`` LLM tokens, aspect kept."""
    gh, gw = fit_grid(budget, aspect_hw)
    unit, sub = spec.unit(projector_merge), spec.merge * projector_merge
    return MediaPlan(
        mode="image",
        num_frames=1,
        grid=(gh, gw),
        height=gh * unit,
        width=gw * unit,
        llm_tokens=gh * gw,
        tower_tokens=gh * gw * sub * sub,
        budget=budget,
        unit=unit,
    )


def plan_codec(
    spec: TowerSpec, budget: int, num_frames: int = 64, input_size: int = 224, mode: str = "codec"
) -> MediaPlan:
    """``codec`` / ``random``: ``budget`` patches (one LLM token each) of the dense T-frame clip (all of
    them when the clip has fewer)."""
    if mode not in ("codec", "random") or mode not in spec.modes:
        raise ValueError(f"the tower does not take the {mode!r} input mode")
    if input_size % spec.patch_size:
        raise ValueError(f"input_size {input_size} is not a multiple of patch {spec.patch_size}")
    side = input_size // spec.patch_size
    tokens = min(budget, num_frames * side * side)  # a budget above the clip's patches is a cap: all of them
    return MediaPlan(
        mode=mode,
        num_frames=num_frames,
        grid=(side, side),
        height=input_size,
        width=input_size,
        llm_tokens=tokens,
        tower_tokens=tokens,
        budget=budget,
        unit=spec.patch_size,
    )


def frame_plans(
    spec: TowerSpec,
    budget: int,
    projector_merge: int = 1,
    frames: tuple[int, ...] = FRAME_CHOICES,
    max_side: int | None = None,
) -> list[MediaPlan]:
    """Every frames/resolution split of ``budget`` over ``frames`` (largest side ≤ ``max_side``): the
    choices a fair comparison tunes for a frame-based tower."""
    out = []
    for f in frames:
        try:
            plan = plan_frames(spec, budget, f, projector_merge)
        except ValueError:
            continue
        if max_side is None or max(plan.height, plan.width) <= max_side:
            out.append(plan)
    return out


def balanced_frames(
    spec: TowerSpec, budget: int, clip_frames: int, projector_merge: int = 1, max_side: int | None = None
) -> MediaPlan:
    """The frames split a frame-based tower gets in a fair comparison: among 1..``clip_frames`` frames
    (whole tubelets only; sides ≤ ``max_side``), the plan that spends the most of ``budget``; ties go
    to the split nearest 8 frames per frame group (neither a few large frames nor many tiny ones)."""
    g = spec.frames_per_token
    plans = frame_plans(spec, budget, projector_merge, tuple(range(g, clip_frames + 1, g)), max_side)
    if not plans:
        raise ValueError(f"no frames split of {budget} tokens fits {clip_frames} frames")
    target = 8 * spec.frames_per_token
    return max(plans, key=lambda p: (p.llm_tokens, -abs(p.num_frames - target)))


def media_plan(cfg: MediaConfig, spec: TowerSpec, projector_merge: int = 1) -> MediaPlan:
    """The plan of ``cfg`` for a tower (``auto``: codec for towers that take it, else frames, so that
    swapping ``model.tower.name`` alone keeps the budget): codec modes select ``budget`` patches of
    ``clip_frames`` frames at ``input_size``; ``frames`` samples ``frames`` frames (default 8 per frame
    group: 8 for single-frame towers, 16 for 2-frame tubelets) sized by :func:`plan_frames`.
    ``projector_merge`` is the model's ``projector.merge`` (frames: a token covers merge² tower tokens)."""
    cfg.validate()
    if cfg.budget is None:
        raise ValueError("media.budget is not set")
    mode = cfg.mode if cfg.mode != "auto" else ("codec" if "codec" in spec.modes else "frames")
    if mode in ("codec", "random"):
        return plan_codec(spec, cfg.budget, cfg.clip_frames, cfg.input_size, mode)
    frames = cfg.frames or 8 * spec.frames_per_token
    return plan_frames(spec, cfg.budget, frames, projector_merge)


__all__ = [
    "FRAME_CHOICES",
    "MEDIA_MODES",
    "MediaConfig",
    "MediaPlan",
    "balanced_frames",
    "media_plan",
    "fit_grid",
    "frame_plans",
    "plan_codec",
    "plan_frames",
    "plan_image",
]
