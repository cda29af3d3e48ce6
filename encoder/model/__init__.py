"""OV-Encoder ViT: 3D RoPE, packed variable-length attention, released-checkpoint compatible names."""

from .attention import SeqInfo, resolve_backend, varlen_attention
from .checkpoint import config_from_hf_dict, config_to_hf_dict, read_config, save_pretrained
from .config import ATTN_BACKENDS, CLIP_MEAN, CLIP_STD, PRESETS, ViTConfig, get_config
from .packing import (
    PackedInput,
    cu_seqlens_from_lengths,
    pack_images,
    pack_selections,
    pack_videos,
    validate_packed,
    video_time_grid,
)
from .rope import apply_rope, rope_cos_sin
from .vit import EncoderOutput, OVEncoder

__all__ = [
    "ATTN_BACKENDS",
    "CLIP_MEAN",
    "CLIP_STD",
    "PRESETS",
    "EncoderOutput",
    "OVEncoder",
    "PackedInput",
    "SeqInfo",
    "ViTConfig",
    "apply_rope",
    "config_from_hf_dict",
    "config_to_hf_dict",
    "cu_seqlens_from_lengths",
    "get_config",
    "pack_images",
    "pack_selections",
    "pack_videos",
    "resolve_backend",
    "read_config",
    "rope_cos_sin",
    "save_pretrained",
    "validate_packed",
    "varlen_attention",
    "video_time_grid",
]
