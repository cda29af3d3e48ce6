"""Projector: vision features → LLM embedding space (``mlp2x_gelu``), with optional 2×2 merge."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from llava_ov.model.config import ProjectorConfig
from llava_ov.model.merge import SLOTS

PROJECTOR_WEIGHTS = "projector.safetensors"


class MLPProjector(nn.Module):
    """Linear(D_in → d) · GELU · Linear(d → d) with D_in = D_v (merge 1) or 4 · D_v (merge 2)."""

    def __init__(self, vision_dim: int, llm_dim: int, merge: int = 1) -> None:
        super().__init__()
        self.merge = merge
        in_dim = vision_dim * (SLOTS if merge == 2 else 1)
        self.linear_1 = nn.Linear(in_dim, llm_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def build_projector(cfg: ProjectorConfig, vision_dim: int, llm_dim: int) -> MLPProjector:
    """A new projector; with ``cfg.path`` its weights are loaded strictly from that safetensors file."""
    cfg.validate()
    projector = MLPProjector(vision_dim, llm_dim, cfg.merge)
    if cfg.path is not None:
        load_projector(projector, cfg.path)
    return projector


def load_projector(projector: nn.Module, path: str | Path) -> None:
    from safetensors.torch import load_file

    from encoder.model.checkpoint import check_state_dict

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"projector weights not found: {path}")
    state = load_file(str(path))
    check_state_dict(projector, state)  # lists missing / unexpected keys and shape mismatches
    projector.load_state_dict(state, strict=True)


def save_projector(projector: nn.Module, path: str | Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in projector.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


__all__ = ["PROJECTOR_WEIGHTS", "MLPProjector", "build_projector", "load_projector", "save_projector"]
