"""Inference: the processor saved with every export and the engine shared by chat, the trainer's
held-out evaluation and the lmms-eval plugin."""

from llava_ov.infer.engine import (
    Engine,
    GenerationConfig,
    LogLikelihood,
    Request,
    cut_at_strings,
    mean_nll,
    resolve_device,
    resolve_dtype,
)
from llava_ov.infer.processor import (
    CODEC_SHORTCUTS,
    PROCESSOR_FILE,
    LlavaOVProcessor,
    Media,
    codec_overrides,
    is_image_path,
)

__all__ = [
    "CODEC_SHORTCUTS",
    "PROCESSOR_FILE",
    "Engine",
    "GenerationConfig",
    "LlavaOVProcessor",
    "LogLikelihood",
    "Media",
    "Request",
    "codec_overrides",
    "cut_at_strings",
    "is_image_path",
    "mean_nll",
    "resolve_device",
    "resolve_dtype",
]
