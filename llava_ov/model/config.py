"""Typed configuration of the LMM: vision tower → projector → causal LM.

Every section is a dataclass that :func:`encoder.typed_config.load_config` /
:func:`encoder.typed_config.merge_config` can fill strictly from YAML and ``model.llm.path=...``
overrides; ``validate()`` runs after each merge.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from encoder.typed_config import ConfigError, check_choices, merge_config
from llava_ov.model.merge import TokenCounter
from llava_ov.model.towers.config import TowerConfig
from llava_ov.model.towers.registry import tower_entry, tower_spec

ProjectorType = Literal["mlp2x_gelu"]
MergeSize = Literal[1, 2]
PosEmbed = Literal["none", "sincos3d"]
#: ``auto``: packed causal attention linear in the samples' lengths (flash-attn, torch varlen_attn or
#: per-sample SDPA; :mod:`llava_ov.model.attention`), transformers' ``sdpa`` for padded batches and generation
AttnImplementation = Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"]
PROJECTOR_TYPES: tuple[str, ...] = typing.get_args(ProjectorType)
MERGE_SIZES: tuple[int, ...] = typing.get_args(MergeSize)
POS_EMBEDS: tuple[str, ...] = typing.get_args(PosEmbed)
ATTN_IMPLEMENTATIONS: tuple[str, ...] = typing.get_args(AttnImplementation)

#: The embedded tiny Qwen3 used when ``LLMConfig.from_scratch`` is set (its keys override these).
#: ``vocab_size`` defaults to the tokenizer's length.
TINY_QWEN3: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    use_cache=False,
)


@dataclass
class ProjectorConfig:
    """``mlp2x_gelu``: Linear(D_in → d) · GELU · Linear(d → d), D_in = D_v · merge²."""

    type: ProjectorType = "mlp2x_gelu"
    merge: MergeSize = 1  # 1, or 2 = 2×2 spatial merge of dense media (see llava_ov.model.merge)
    path: str | None = None  # safetensors file with trained projector weights (None = random init)
    # "none" (the paper's design, every full-scale recipe) | "sincos3d": a fixed 3D sin-cos embedding
    # of each visual token's (t, h, w) added to the projector input (encoder.model.posembed.sincos3d);
    # it tells the LLM where / when a token of a sparse codec selection was (the tower has RoPE only).
    pos_embed: PosEmbed = "none"

    def validate(self) -> None:
        check_choices(self, "projector.")


@dataclass
class LLMConfig:
    """Causal LM loaded with ``AutoModelForCausalLM`` (no remote code, no patches)."""

    path: str = "Qwen/Qwen3-1.7B"  # hub id or local dir
    from_scratch: dict | None = None  # Qwen3Config kwargs over TINY_QWEN3 → random LLM; `path` ignored
    attn_implementation: AttnImplementation = "auto"
    tokenizer: str | None = None  # defaults to `path`

    def validate(self) -> None:
        check_choices(self, "llm.")

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.path


@dataclass
class ModelConfig:
    tower: TowerConfig = field(default_factory=TowerConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    activation_checkpointing: bool = False  # tower blocks and LLM layers (non-reentrant)
    # torch.compile of each LLM decoder layer and each tower block (in place: parameter names, checkpoints
    # and resume unchanged; packed batches of any length; off until measured on your GPU, BENCHMARKS.md)
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile backend ("aot_eager": no code generation, tests)

    def validate(self) -> None:
        self.tower.validate()
        self.projector.validate()
        self.llm.validate()
        if self.projector.merge != 1:
            if tower_entry(self.tower.name).merges_itself:
                raise ConfigError(f"tower {self.tower.name!r} merges patches itself: use projector.merge=1")

    def token_counter(self) -> TokenCounter:
        """The picklable LLM-token counter of this model (tower spec + projector merge), no weights."""
        return tower_spec(self.tower).token_counter(self.projector.merge)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Strict inverse of :meth:`to_dict` (unknown keys raise ``ConfigError``)."""
        return merge_config(cls(), data)


def debug_config(merge: int = 1, **llm_overrides: Any) -> ModelConfig:
    """A tiny random model for CPU tests and smoke runs: ``debug`` encoder + :data:`TINY_QWEN3`."""
    return ModelConfig(
        tower=TowerConfig(size="debug"),
        projector=ProjectorConfig(merge=merge),
        llm=LLMConfig(from_scratch=dict(llm_overrides)),
    )


__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "MERGE_SIZES",
    "POS_EMBEDS",
    "PROJECTOR_TYPES",
    "TINY_QWEN3",
    "LLMConfig",
    "ModelConfig",
    "ProjectorConfig",
    "TowerConfig",
    "debug_config",
]
