"""Qwen3-ViT settings and checkpoints: the config keys and size presets, the tower's settings resolved
from a :class:`TowerConfig` (preset or checkpoint config, then overrides), and the strict reading of a
checkpoint folder's vision tensors (full Qwen3-VL or a saved tower; see :mod:`.qwen3_vit`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open
from torch import Tensor

from encoder.model.checkpoint import (
    CONFIG_NAME,
    PREPROCESSOR_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    check_state_dict,
    resolve_checkpoint_dir,
)

if TYPE_CHECKING:
    from llava_ov.model.towers.config import TowerConfig


log = logging.getLogger(__name__)

VISION_MODEL_TYPE = "qwen3_vl_vision"  # Qwen3VLVisionConfig.model_type: our own saved folders
FULL_MODEL_TYPE = "qwen3_vl"  # a full Qwen3-VL checkpoint (Qwen3VLForConditionalGeneration)
FULL_PREFIXES = ("model.visual.", "visual.")  # where a full checkpoint keeps its vision tensors
DEEPSTACK_PREFIX = "deepstack_merger_list."

#: Qwen3VLVideoProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD) — see the module docstring.
QWEN3_VL_MEAN = (0.5, 0.5, 0.5)
QWEN3_VL_STD = (0.5, 0.5, 0.5)

#: Qwen3VLVisionConfig keys a checkpoint config or ``overrides`` may set (``deepstack_visual_indexes``
#: is always ``[]``, see the module docstring).
ARCH_KEYS = (
    "depth",
    "hidden_size",
    "hidden_act",
    "intermediate_size",
    "num_heads",
    "in_channels",
    "patch_size",
    "spatial_merge_size",
    "temporal_patch_size",
    "out_hidden_size",
    "num_position_embeddings",
    "initializer_range",
    "rope_parameters",
)
PREPROCESS_KEYS = ("image_mean", "image_std")
RUNTIME_KEYS = ("attn_implementation",)  # not saved: e.g. "flash_attention_2" on GPU
OVERRIDE_KEYS = ARCH_KEYS + PREPROCESS_KEYS + RUNTIME_KEYS


@dataclass
class Qwen3ViTOptions:
    """The keys of ``model.tower.qwen3_vit`` (and of ``overrides`` with this tower): :data:`OVERRIDE_KEYS`,
    set over the preset / checkpoint config. A schema of a ``Partial``: only the keys given are set."""

    depth: int
    hidden_size: int
    hidden_act: str
    intermediate_size: int
    num_heads: int
    in_channels: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    out_hidden_size: int
    num_position_embeddings: int
    initializer_range: float
    rope_parameters: dict | None
    image_mean: list[float]  # 3 values (RGB), checked by _stats
    image_std: list[float]
    attn_implementation: str  # e.g. "flash_attention_2" on GPU


PRESETS: dict[str, dict[str, Any]] = {
    # tiny, for CPU tests and smoke runs
    "debug": dict(
        depth=2,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        patch_size=16,
        temporal_patch_size=2,
        spatial_merge_size=2,
        out_hidden_size=48,
        num_position_embeddings=64,
    ),
    # Qwen/Qwen3-VL-8B-*: depth / hidden / out_hidden from the hub config (towers notes); the rest are
    # transformers' Qwen3VLVisionConfig defaults (the same ViT)
    "8b": dict(
        depth=27,
        hidden_size=1152,
        num_heads=16,
        intermediate_size=4304,
        patch_size=16,
        temporal_patch_size=2,
        spatial_merge_size=2,
        out_hidden_size=4096,
        num_position_embeddings=2304,
    ),
}

# generic config.json keys that carry no architecture information (ignored without a warning)
_GENERIC_KEYS = {
    "model_type",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_name_or_path",
    "deepstack_visual_indexes",
    "output_hidden_states",
    "return_dict",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
    "_attn_implementation_autoset",
}


def _hf_classes():
    try:
        from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel
    except ImportError as e:  # pragma: no cover - depends on the installed transformers
        raise ImportError(f"the qwen3_vit tower needs transformers>=4.57 (Qwen3-VL): {e}") from e
    return Qwen3VLVisionConfig, Qwen3VLVisionModel


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Settings:
    """Everything the tower is built from: vision-config keys, normalisation, runtime switches."""

    arch: dict[str, Any]
    image_mean: tuple[float, float, float] = QWEN3_VL_MEAN
    image_std: tuple[float, float, float] = QWEN3_VL_STD
    runtime: dict[str, Any] | None = None
    directory: Path | None = None  # checkpoint folder (None: random weights of a preset)
    prefix: str | None = None  # where the vision tensors live in that folder ("" = our own layout)

    def vision_config(self):
        config_cls, _ = _hf_classes()
        try:
            cfg = config_cls(**self.arch, deepstack_visual_indexes=[], **(self.runtime or {}))
        except Exception as e:  # 5.x raises huggingface_hub strict-dataclass errors (not ValueError)
            raise ValueError(f"invalid Qwen3VLVisionConfig values: {str(e).strip()}") from None
        _check_arch(cfg)
        return cfg


def _check_arch(cfg) -> None:
    """What our input builder and the HF model assume but its config does not check."""
    if cfg.in_channels != 3:
        raise ValueError(f"in_channels must be 3 (RGB patches), got {cfg.in_channels}")
    for key in ("patch_size", "temporal_patch_size", "spatial_merge_size", "depth", "num_heads"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if cfg.hidden_size % cfg.num_heads or (cfg.hidden_size // cfg.num_heads) % 4:
        raise ValueError(
            f"hidden_size {cfg.hidden_size} / num_heads {cfg.num_heads} must be a head size "
            "divisible by 4 (2D rotary embedding)"
        )
    side = math.isqrt(cfg.num_position_embeddings)
    if side < 2 or side * side != cfg.num_position_embeddings:
        raise ValueError(f"num_position_embeddings must be a square >= 4, got {cfg.num_position_embeddings}")


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict, dict]:
    if "deepstack_visual_indexes" in overrides:
        raise ValueError(
            "deepstack_visual_indexes cannot be set: the tower always builds without deepstack "
            "mergers (their features are unused)"
        )
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(f"unknown override keys {unknown}; allowed: {list(OVERRIDE_KEYS)}")
    arch = {k: v for k, v in overrides.items() if k in ARCH_KEYS}
    pre = {k: v for k, v in overrides.items() if k in PREPROCESS_KEYS}
    run = {k: v for k, v in overrides.items() if k in RUNTIME_KEYS}
    return arch, pre, run


def _stats(values: Any, key: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{key} needs 3 values (RGB), got {values!r}")
    if key == "image_std" and min(out) <= 0:
        raise ValueError(f"image_std must be positive, got {values!r}")
    return out  # type: ignore[return-value]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None


def _read_folder(directory: Path) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """(vision-config keys, tensor prefix kind, preprocessor stats) of a checkpoint folder.

    The prefix is ``""`` for our own layout and ``None`` for a full checkpoint (chosen from the tensor
    names by :func:`_vision_tensor_names`)."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise ValueError(
            f"{directory}: no {CONFIG_NAME}; expected a Qwen3-VL checkpoint or a saved qwen3_vit tower"
        )
    raw = _read_json(path)
    model_type = raw.get("model_type")
    if "vision_config" in raw:
        if model_type != FULL_MODEL_TYPE:
            raise ValueError(
                f"{directory}: model_type {model_type!r} is not a Qwen3-VL checkpoint ({FULL_MODEL_TYPE!r})"
            )
        vision, prefix = dict(raw["vision_config"]), None
    elif model_type == VISION_MODEL_TYPE:
        vision, prefix = raw, ""
    else:
        raise ValueError(
            f"{directory}: {CONFIG_NAME} is neither a Qwen3-VL checkpoint (model_type "
            f"{FULL_MODEL_TYPE!r} with a vision_config) nor a saved qwen3_vit tower (model_type "
            f"{VISION_MODEL_TYPE!r}); got model_type {model_type!r}"
        )
    ignored = sorted(set(vision) - set(ARCH_KEYS) - _GENERIC_KEYS)
    if ignored:
        log.warning("%s: ignoring vision config keys %s", directory, ignored)
    arch = {k: vision[k] for k in ARCH_KEYS if k in vision}
    pre_path = directory / PREPROCESSOR_NAME
    pre = _read_json(pre_path) if pre_path.is_file() else {}
    return arch, prefix, {k: pre[k] for k in PREPROCESS_KEYS if k in pre}


def _settings(cfg: TowerConfig, read_checkpoint: bool = True) -> _Settings:
    """The tower's settings from ``cfg`` (``ValueError`` on bad keys or values). With a path and
    ``read_checkpoint=False`` only the override keys are checked (no file or network access)."""
    arch_o, pre_o, run_o = _split_overrides(dict(cfg.options))  # TowerConfig.qwen3_vit, then overrides
    for key, value in pre_o.items():
        _stats(value, key)
    directory, prefix, pre = None, None, {}
    if cfg.path is not None:
        if not read_checkpoint:
            return _Settings(arch={}, runtime=run_o)

        directory = resolve_checkpoint_dir(cfg.path)
        arch, prefix, pre = _read_folder(directory)
    elif cfg.size in PRESETS:
        arch = dict(PRESETS[cfg.size])
    else:
        raise ValueError(f"unknown size {cfg.size!r}; presets: {sorted(PRESETS)} (or set path)")
    pre = {**pre, **pre_o}
    return _Settings(
        arch={**arch, **arch_o},
        image_mean=_stats(pre.get("image_mean", QWEN3_VL_MEAN), "image_mean"),
        image_std=_stats(pre.get("image_std", QWEN3_VL_STD), "image_std"),
        runtime=run_o,
        directory=directory,
        prefix=prefix,
    )


# ----------------------------------------------------------------------------- checkpoints


def _tensor_files(directory: Path) -> dict[str, list[str]]:
    """safetensors file → the tensor names it holds (the index when sharded; headers only)."""
    index = directory / WEIGHTS_INDEX_NAME
    if index.is_file():
        files: dict[str, list[str]] = {}
        for name, shard in _read_json(index)["weight_map"].items():
            files.setdefault(shard, []).append(name)
        return files
    paths = (
        [directory / WEIGHTS_NAME]
        if (directory / WEIGHTS_NAME).is_file()
        else sorted(directory.glob("*.safetensors"))
    )
    if not paths:
        raise ValueError(f"{directory}: no .safetensors weights")
    out = {}
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            out[path.name] = list(f.keys())
    return out


def read_vision_state(directory: Path, prefix: str | None) -> dict[str, Tensor]:
    """The vision tensors of a checkpoint folder, prefix stripped, deepstack mergers dropped.

    ``prefix=None``: a full checkpoint; the first of :data:`FULL_PREFIXES` that names any tensor.
    Only the files holding selected tensors are opened, and only those tensors are read."""
    files = _tensor_files(directory)
    if prefix is None:
        names = [n for ns in files.values() for n in ns]
        prefix = next((p for p in FULL_PREFIXES if any(n.startswith(p) for n in names)), None)
        if prefix is None:
            raise ValueError(f"{directory}: no vision tensors (none named {' / '.join(FULL_PREFIXES)}*)")
    state: dict[str, Tensor] = {}
    dropped = 0
    for file, names in sorted(files.items()):
        wanted = [n for n in names if n.startswith(prefix)]
        if not wanted:
            continue
        with safe_open(str(directory / file), framework="pt") as f:
            for name in wanted:
                key = name[len(prefix) :]
                if key.startswith(DEEPSTACK_PREFIX):
                    dropped += 1
                    continue
                state[key] = f.get_tensor(name)
    if dropped:
        log.info(
            "%s: dropped %d deepstack merger tensors (deepstack features are unused)", directory, dropped
        )
    return state


def load_vision_state(model, state: dict[str, Tensor], source: Path | str) -> None:
    """Strict load: missing / unexpected keys or shape mismatches → ``ValueError`` naming them."""
    try:
        check_state_dict(model, state)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    model.load_state_dict(state, strict=True)
