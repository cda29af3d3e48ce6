"""The LMM: vision tower (registry in ``towers``) → MLP projector → transformers causal LM."""

from llava_ov.model.config import (
    TINY_QWEN3,
    LLMConfig,
    ModelConfig,
    ProjectorConfig,
    TowerConfig,
    debug_config,
)
from llava_ov.model.llm import SpecialTokenIds
from llava_ov.model.lmm import LlavaOVModel, ModelOutput, build_model
from llava_ov.model.loss import causal_lm_loss, lm_head_loss
from llava_ov.model.merge import TokenCounter, merge_plan
from llava_ov.model.towers import TOWERS, VisionTower, build_tower

__all__ = [
    "TINY_QWEN3",
    "TOWERS",
    "LLMConfig",
    "LlavaOVModel",
    "ModelConfig",
    "ModelOutput",
    "ProjectorConfig",
    "SpecialTokenIds",
    "TokenCounter",
    "TowerConfig",
    "VisionTower",
    "build_model",
    "build_tower",
    "causal_lm_loss",
    "lm_head_loss",
    "debug_config",
    "merge_plan",
]
