"""Model FLOPs of an LMM training step: the one formula behind the trainer's logged ``mfu`` and
``benchmarks/bench_lmm.py``.

Per step (dense matmuls at 2 FLOPs per multiply-add; no recomputation counted, so activation
checkpointing lowers MFU rather than inflating it):

* **matmuls**: ``2 · P · rows`` forward for every weight matrix of ``P`` parameters applied to
  ``rows`` tokens: the LLM's decoder layers on every text token (visual tokens included), its LM
  head (``d · V``) only on the positions with a target (the loss needs no others), the projector on
  every visual token, the vision tower's blocks that run on every patch (blocks after the output
  layer and the pooling head do not run and are not counted).
* **attention scores and values**: ``4 · Σ_i s_i² · w`` forward, ``w`` = Σ over attention layers of
  heads × head_dim, over each *sample's* length ``s_i`` (the LLM, halved: causal) and each media
  item's patch count (the tower, not causal). A pack's cross-sample blocks are not useful work and
  are not counted: packed attention that computes them shows as lower MFU.
* **backward**: 2× forward for a part whose weights train (gradients of weights and inputs), 1× for
  a frozen part that gradients pass through (inputs only: the LLM when only the projector trains),
  0 for a frozen part with nothing trainable before it (a frozen tower).

MFU = FLOPs / (step time · world size · peak), the peak from ``log.peak_tflops`` or the GPU table in
:mod:`llava_ov.train.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from llava_ov.model.llm import base_model


@dataclass(frozen=True)
class Part:
    """One part of the model for the FLOP count."""

    matmul_params: int  # weights of the matrices applied to each row
    attn_width: int = 0  # Σ over attention layers of heads × head_dim (0: no attention)
    causal: bool = False
    passes: int = 3  # forward + backward multiples: 3 trained, 2 gradients pass through, 1 forward only

    def flops(self, rows: float, seq_sq: float = 0.0) -> float:
        attn = 4.0 * seq_sq * self.attn_width * (0.5 if self.causal else 1.0)
        return self.passes * (2.0 * self.matmul_params * rows + attn)


@dataclass(frozen=True)
class FlopModel:
    """The parts of an LMM (see the module docstring); :meth:`step_flops` counts one step."""

    llm: Part
    lm_head: Part
    projector: Part
    vision: Part
    rows_per_patch: float = 1.0  # tower rows per frame patch (1/2 for two-frame tubelets)

    def step_flops(
        self,
        text_tokens: float,
        targets: float,
        visual_tokens: float,
        patches: float,
        sample_sq: float = 0.0,
        media_sq: float = 0.0,
    ) -> float:
        """``visual_tokens``: LLM visual tokens (the projector's rows); ``patches``: frame patches given
        to the tower; ``sample_sq`` = Σ sample length², ``media_sq`` = Σ media patch count² (0: the
        quadratic term left out)."""
        f = self.rows_per_patch
        return (
            self.llm.flops(text_tokens, sample_sq)
            + self.lm_head.flops(targets)
            + self.projector.flops(visual_tokens)
            + self.vision.flops(patches * f, media_sq * f * f)
        )


def matrix_params(module: nn.Module, skip: Sequence[str] = ()) -> int:
    """Parameters of the weight matrices (Linear, Conv) of ``module``, except the names in ``skip``
    (embedding tables, norms and biases are not matmuls)."""
    skipped = set(skip)
    total = 0
    for name, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and f"{name}.weight" not in skipped:
            total += weight.numel()
    return total


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def flop_model(model: nn.Module) -> FlopModel:
    """The FLOP model of a :class:`llava_ov.model.LlavaOVModel` as it is set up to train (its
    ``requires_grad`` flags decide the backward multiples)."""
    lm = base_model(model.llm)
    cfg = lm.config
    head = lm.get_output_embeddings()
    decoder = lm.get_decoder()
    tower, projector = model.vision_tower, model.projector
    train_tower, train_proj, train_llm = _trains(tower), _trains(projector), _trains(lm)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    llm_width = cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    llm_passes = 3 if train_llm else (2 if train_proj or train_tower else 1)
    proj_passes = 3 if train_proj else (2 if train_tower else 1)
    unused = set(tower.unused_parameter_names())
    return FlopModel(
        llm=Part(matrix_params(decoder), llm_width, causal=True, passes=llm_passes),
        lm_head=Part(head.weight.numel(), passes=llm_passes),
        projector=Part(matrix_params(projector), passes=proj_passes),
        vision=Part(matrix_params(tower, unused), tower.attention_width(), passes=3 if train_tower else 1),
        rows_per_patch=1.0 / tower.spec.frames_per_token,
    )


def squared_lengths(cu_seqlens) -> float:
    """Σ length² of the sequences of ``cu_seqlens`` (the attention term's input)."""
    lengths = cu_seqlens.diff().double()
    return float((lengths * lengths).sum())


__all__ = ["FlopModel", "Part", "flop_model", "matrix_params", "squared_lengths"]
