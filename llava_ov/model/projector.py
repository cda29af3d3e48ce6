"""Projector: vision features → LLM embedding space (``mlp2x_gelu``), with optional 2×2 merge.

``pos_embed="sincos3d"`` adds a fixed (parameter-free) 3D sin-cos embedding of every visual token's
``(t, h, w)`` position to the projector *input*, see :func:`sincos3d`. The OV-Encoder only has
relative RoPE, so without it a sparse codec selection reaches the LLM as a flat token sequence
that says neither where nor when each token was; the first linear layer learns how much of the
position signal to use and can combine it with the content (GELU), at no extra parameter.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from encoder.model.checkpoint import check_state_dict
from encoder.model.posembed import sincos3d
from llava_ov.model.config import ProjectorConfig
from llava_ov.model.merge import SLOTS, MergePlan

PROJECTOR_WEIGHTS = "projector.safetensors"


def merged_positions(positions: Tensor, plan: MergePlan) -> Tensor:
    """``(t, h // 2, w // 2)`` of every merged token ``[G, 3]``, in the plan's token order."""
    pos = positions.to(torch.long).cpu()
    pos = torch.stack([pos[:, 0], pos[:, 1] // 2, pos[:, 2] // 2], dim=1)
    out = torch.zeros(plan.num_groups, 3, dtype=torch.long)
    return out.index_copy_(0, plan.group.cpu(), pos)  # every patch of a group holds the same value


class MLPProjector(nn.Module):
    """Linear(D_in → d) · GELU · Linear(d → d) with D_in = D_v (merge 1) or 4 · D_v (merge 2).

    With ``pos_embed="sincos3d"``, ``forward`` needs the tokens' ``(t, h, w)`` positions ``[N, 3]``
    (the merged token's ``(t, h // 2, w // 2)`` with merge 2) and adds :func:`sincos3d` ``[N, D_in]``
    to the input. The embedding has no parameters: the state dict is the same for every option.
    """

    def __init__(self, vision_dim: int, llm_dim: int, merge: int = 1, pos_embed: str = "none") -> None:
        super().__init__()
        self.merge = merge
        self.pos_embed = pos_embed
        self.in_dim = vision_dim * (SLOTS if merge == 2 else 1)
        self.linear_1 = nn.Linear(self.in_dim, llm_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        if self.pos_embed == "sincos3d":
            if positions is None or positions.shape[0] != x.shape[0]:
                got = None if positions is None else tuple(positions.shape)
                raise ValueError(
                    f"pos_embed='sincos3d' needs one (t, h, w) position per token: {x.shape[0]}, got {got}"
                )
            x = x + sincos3d(positions.to(x.device), self.in_dim).to(x.dtype)
        return self.linear_2(self.act(self.linear_1(x)))


def build_projector(cfg: ProjectorConfig, vision_dim: int, llm_dim: int) -> MLPProjector:
    """A new projector; with ``cfg.path`` its weights are loaded strictly from that safetensors file."""
    cfg.validate()
    projector = MLPProjector(vision_dim, llm_dim, cfg.merge, cfg.pos_embed)
    if cfg.path is not None:
        load_projector(projector, cfg.path)
    return projector


def load_projector(projector: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"projector weights not found: {path}")
    state = load_file(str(path))
    check_state_dict(projector, state)  # lists missing / unexpected keys and shape mismatches
    projector.load_state_dict(state, strict=True)


def save_projector(projector: nn.Module, path: str | Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in projector.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


__all__ = [
    "PROJECTOR_WEIGHTS",
    "MLPProjector",
    "build_projector",
    "load_projector",
    "merged_positions",
    "save_projector",
    "sincos3d",
]
