"""LMM training under DeepSpeed: typed stage configs, one trainer loop, exact resume, evaluation.

Modules: ``config`` (TrainConfig / StageConfig), ``distributed`` (the only DeepSpeed code),
``optim`` (freezing, LoRA, per-module AdamW groups), ``schedule`` (warmup + cosine, pure in the step),
``checkpoint`` (resumable checkpoints, stage exports), ``flops`` (the MFU formula), ``metrics`` (throughput,
MFU, logger, loss plot),
``evaluate`` (held-out accuracy per question type), ``build`` (tokenizer / data / model of a stage),
``trainer`` (the loop).
"""

from llava_ov.train.config import (
    MODULES,
    STAGES,
    CheckpointConfig,
    DeepSpeedConfig,
    EvalConfig,
    LogConfig,
    LoraConfig,
    OptimConfig,
    StageConfig,
    TrainConfig,
    load_train_config,
)
from llava_ov.train.evaluate import format_table, normalize_answer, summarize
from llava_ov.train.flops import FlopModel, flop_model
from llava_ov.train.metrics import PEAK_TFLOPS, peak_flops, plot_loss, read_metrics
from llava_ov.train.schedule import lr_factor, warmup_steps
from llava_ov.train.trainer import StageResult, train

__all__ = [
    "MODULES",
    "PEAK_TFLOPS",
    "STAGES",
    "CheckpointConfig",
    "DeepSpeedConfig",
    "EvalConfig",
    "FlopModel",
    "LogConfig",
    "LoraConfig",
    "OptimConfig",
    "StageConfig",
    "StageResult",
    "TrainConfig",
    "flop_model",
    "format_table",
    "load_train_config",
    "lr_factor",
    "normalize_answer",
    "peak_flops",
    "plot_loss",
    "read_metrics",
    "summarize",
    "train",
    "warmup_steps",
]
