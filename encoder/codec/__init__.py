"""Codec patchification: decode a video, read codec motion + residual signals, keep the most
informative patches of a dense clip under a fixed token budget (with a dense context frame)."""

from encoder.codec.cache import PatchCache
from encoder.codec.decode import DecodeConfig, DecodedClip, decode_clip
from encoder.codec.errors import VideoDecodeError
from encoder.codec.pipeline import (
    MODES,
    Canvas,
    CodecConfig,
    patchify,
    patchify_frames,
    patchify_image,
    patchify_with_canvas,
    video_settings,
)
from encoder.codec.saliency import SaliencyConfig, energies, is_static, patch_scores, saliency_map
from encoder.codec.select import SelectConfig, Selection, select_patches
from encoder.codec.types import TEMPORAL_GRID, PatchSelection, virtual_t
from encoder.codec.viz import render_selection

__all__ = [
    "MODES",
    "TEMPORAL_GRID",
    "Canvas",
    "CodecConfig",
    "DecodeConfig",
    "DecodedClip",
    "PatchCache",
    "PatchSelection",
    "SaliencyConfig",
    "SelectConfig",
    "Selection",
    "VideoDecodeError",
    "decode_clip",
    "energies",
    "is_static",
    "patch_scores",
    "patchify",
    "patchify_frames",
    "patchify_image",
    "patchify_with_canvas",
    "render_selection",
    "saliency_map",
    "select_patches",
    "video_settings",
    "virtual_t",
]
