"""Shared pieces of the inference tests (``test_infer_engine.py``, ``test_infer_processor.py``): the
lively tiny model, a small codec, the module's media files and a saved export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from encoder.codec import CodecConfig
from encoder.codec.synthetic import make_clip
from llava_ov.infer import LlavaOVProcessor
from llava_ov.model import build_model, debug_config


def lively_model(tokenizer, merge: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(debug_config(merge=merge, initializer_range=0.3), tokenizer).eval()


def small_codec() -> CodecConfig:
    codec = CodecConfig(mode="frames", num_frames=2)
    codec.decode.input_size = 28
    return codec


def small_processor(model) -> LlavaOVProcessor:
    return LlavaOVProcessor(model.tokenizer, small_codec(), tokens_for=model.token_counter())


def write_media(d: Path) -> dict:
    """A clip, a still (PNG and PIL), a missing and a corrupt file under ``d``."""
    video = make_clip(d / "clip.mp4", "mover", width=56, height=56, num_frames=8).path
    rgb = np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8)  # not multiples of 14
    Image.fromarray(rgb).save(d / "still.png")
    pil = Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 42, 3), dtype=np.uint8))
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 4)
    return {
        "video": video,
        "image": str(d / "still.png"),
        "pil": pil,
        "dir": d,
        "missing": str(d / "missing_clip.mp4"),
        "corrupt": str(d / "corrupt.mp4"),
    }


def export_checkpoint(
    tokenizer, folder: Path, merge: int, processor_kwargs: dict
) -> tuple[Path, LlavaOVProcessor]:
    """A lively model saved to ``folder`` with a processor built from ``processor_kwargs``."""
    model = lively_model(tokenizer, merge=merge, seed=1)
    out = model.save_pretrained(folder)
    proc = LlavaOVProcessor(model.tokenizer, tokens_for=model.token_counter(), **processor_kwargs)
    proc.save_pretrained(out)
    return out, proc
