"""SigLIP2 NaFlex (``transformers.Siglip2VisionModel``) as the LMM's vision tower.

One tower token per 16×16 patch (``TowerSpec(16, modes=DENSE_MODES)``); the projector's optional 2×2
merge then gives one LLM token per 32×32 pixels.

Input: every frame (distinct ``t``) of every media item is one NaFlex image. Its patches are put in
raster order (slot ``h * cols + w``; rows / cols = the frame's largest ``h`` / ``w`` + 1), flattened
``(ph, pw, C)`` channel-fastest and normalised ``(x / 255 - 0.5) / 0.5`` — exactly what
``Siglip2ImageProcessor(Pil)`` produces for an image that needs no resize. All frames of a batch run
in one call, padded to the longest frame (``pixel_attention_mask`` 0 on the padding; padded rows are
never read back), with ``spatial_shapes`` = (rows, cols) per frame. The features come back in the
original patch order, so :func:`patch_output` keeps the media's positions and offsets. Frames must be
dense (every patch of their grid): a sparse codec selection is a ``ValueError``.

``output_layer``: ``-1`` = ``last_hidden_state`` (the last block, after ``post_layernorm``); any other
value indexes ``hidden_states`` = (embeddings, block 1, …, block L), so ``-2`` (the default of
:class:`TowerConfig`) is the output of the second-to-last block and ``L`` the last block before the
post-norm; valid range ``[-(L + 1), L]``. The attention-pooling head is never used (it is skipped at
run time, its weights are kept for a faithful save); the head, and the post-norm and blocks after
``output_layer`` when ``output_layer != -1``, are reported by :meth:`Siglip2Tower.unused_parameter_names`
and stay frozen. (With ``output_layer != -1`` the remaining blocks still run: one extra block of
compute for ``-2``, in exchange for using only transformers' public forward.)

Weights (``TowerConfig.path``: hub id or folder): a vision-only ``Siglip2VisionModel`` folder (keys
``embeddings.*``, or 4.x-style ``vision_model.embeddings.*``) or a full ``Siglip2Model`` checkpoint such
as ``google/siglip2-so400m-patch16-naflex`` (vision config from ``vision_config``, weights under
``vision_model.``; the text tower and logit scale / bias are dropped). The tensors are read with
safetensors and loaded with a strict key / shape check: a missing or unexpected parameter is a
``ValueError`` naming it, never a silent random init. Floating weights are loaded as fp32 (the trainer
casts for bf16). Without a path, a random ``size`` preset (``debug``, ``so400m``). ``overrides`` are
``Siglip2VisionConfig`` fields plus ``attn_implementation`` (``sdpa`` default, or ``eager``; SigLIP2 has no
flash-attention support in transformers 5.x).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from encoder.model.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_state_dict,
    read_state_dict,
    resolve_checkpoint_dir,
)
from encoder.typed_config import ConfigError
from llava_ov.data.dataset import MediaBatch
from llava_ov.model.hf import set_hf_checkpointing
from llava_ov.model.towers.base import (
    DENSE_MODES,
    Tower,
    TowerOutput,
    TowerSpec,
    VisionTower,
    is_local,
    patch_output,
)

if TYPE_CHECKING:
    from llava_ov.model.towers.config import TowerConfig

VISION_PREFIX = "vision_model."  # the vision part of a full Siglip2Model (and of 4.x vision-only saves)
OTHER_PARTS = ("text_model.", "logit_scale", "logit_bias")  # rest of a full Siglip2Model checkpoint
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
FULL_MODEL_TYPE, VISION_MODEL_TYPE = "siglip2", "siglip2_vision_model"

#: Random-init architectures (``cfg.path is None``); ``so400m`` = google/siglip2-so400m-patch16-naflex.
PRESETS: dict[str, dict[str, Any]] = {
    "debug": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=16,
        num_patches=16,
    ),
    "so400m": dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        patch_size=16,
        num_patches=256,
    ),
}


@dataclass
class Siglip2Options:
    """The keys of ``model.tower.siglip2`` (and of ``overrides`` with this tower): the architecture
    fields of ``Siglip2VisionConfig`` (:func:`config_fields`) set over the preset / checkpoint config,
    plus the attention implementation. A schema of a ``Partial``: only the keys given are set."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_channels: int
    patch_size: int
    hidden_act: str
    layer_norm_eps: float
    attention_dropout: float
    vision_use_head: bool
    num_patches: int
    attn_implementation: str  # one of ATTN_IMPLEMENTATIONS, checked (with the reason) by _check_overrides


def config_fields() -> tuple[str, ...]:
    """The architecture fields of ``Siglip2VisionConfig`` (not the generic ``PreTrainedConfig`` ones)."""
    from transformers import PreTrainedConfig, Siglip2VisionConfig

    generic = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    return tuple(f.name for f in dataclasses.fields(Siglip2VisionConfig) if f.name not in generic)


def _check_overrides(overrides: dict[str, Any]) -> None:
    allowed = (*config_fields(), "attn_implementation")
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown Siglip2VisionConfig override(s) {unknown}; allowed: {sorted(allowed)}")
    attn = overrides.get("attn_implementation", "sdpa")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS} (SigLIP2 has no "
            f"flash-attention support in transformers), got {attn!r}"
        )


def _strict_errors() -> tuple[type[Exception], ...]:
    """The error type of huggingface_hub's strict config dataclasses (where it exists)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # pragma: no cover - older huggingface_hub
        return ()
    return (StrictDataclassError,)


def _make_config(base: dict[str, Any], overrides: dict[str, Any]):
    """``Siglip2VisionConfig`` of ``base`` (a preset or a config.json dict) with ``overrides`` on top."""
    from transformers import Siglip2VisionConfig

    _check_overrides(overrides)
    overrides = dict(overrides)
    attn = overrides.pop("attn_implementation", "sdpa")
    fields = {k: v for k, v in base.items() if k not in ("attn_implementation", "_attn_implementation")}
    try:
        config = Siglip2VisionConfig.from_dict({**fields, **overrides, "attn_implementation": attn})
    except (TypeError, ValueError, *_strict_errors()) as e:  # a wrong-typed field value
        raise ValueError(" ".join(str(e).split())) from None
    if not isinstance(config.patch_size, int) or config.num_channels != 3:
        raise ValueError(
            f"need an int patch_size and 3 channels, got patch_size={config.patch_size!r}, "
            f"num_channels={config.num_channels}"
        )
    return config


def _read_vision_config(directory: Path) -> tuple[dict[str, Any], bool]:
    """(vision config dict, is a full ``Siglip2Model``) of a checkpoint folder's config.json."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"no {CONFIG_NAME} in {directory}")
    raw = json.loads(path.read_text())
    model_type = raw.get("model_type")
    if model_type == FULL_MODEL_TYPE:
        return dict(raw.get("vision_config") or {}), True
    if model_type == VISION_MODEL_TYPE:
        return raw, False
    raise ValueError(
        f"{path}: model_type {model_type!r} is not a SigLIP2 checkpoint "
        f"(expected {FULL_MODEL_TYPE!r} or {VISION_MODEL_TYPE!r})"
    )


def _resolve_layer(output_layer: int, num_layers: int) -> int:
    """Index into ``hidden_states`` (0 = embeddings, L = last block) of ``output_layer``."""
    if not -(num_layers + 1) <= output_layer <= num_layers:
        raise ValueError(
            f"output_layer must be in [{-(num_layers + 1)}, {num_layers}] for {num_layers} "
            f"layers, got {output_layer}"
        )
    return output_layer % (num_layers + 1)


def vision_state_dict(state: dict[str, Tensor], full: bool) -> dict[str, Tensor]:
    """The ``Siglip2VisionModel`` tensors of a checkpoint: a full model's ``vision_model.*`` (its text
    tower and logit scale / bias dropped; anything else is kept under its name so that the strict check
    reports it); a vision-only model's keys, ``vision_model.`` stripped when every key has it."""
    if full:
        return {
            (k[len(VISION_PREFIX) :] if k.startswith(VISION_PREFIX) else k): v
            for k, v in state.items()
            if not k.startswith(OTHER_PARTS)
        }
    if state and all(k.startswith(VISION_PREFIX) for k in state):
        return {k[len(VISION_PREFIX) :]: v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class FrameLayout:
    """Where each patch of a packed batch goes in the padded NaFlex input."""

    frame: Tensor  # long [N]: frame (one NaFlex image) of each patch, frames ordered (media item, t)
    slot: Tensor  # long [N]: raster index h * cols + w inside its frame
    spatial_shapes: Tensor  # long [F, 2]: (rows, cols) per frame
    max_len: int  # longest frame (rows · cols)

    @property
    def num_frames(self) -> int:
        return int(self.spatial_shapes.shape[0])


def frame_layout(positions: Tensor, cu_seqlens: Tensor) -> FrameLayout:
    """Split packed patches into dense frames (one per distinct ``t`` of each media item). CPU ints.

    Raises ``ValueError`` when a frame is not dense (every patch of its ``rows × cols`` grid, once)."""
    pos = positions.detach().cpu().to(torch.long)
    bounds = cu_seqlens.detach().cpu().to(torch.long)
    counts = torch.diff(bounds)
    if int(bounds[-1]) != len(pos) or (counts < 0).any():
        raise ValueError(f"cu_seqlens {bounds.tolist()} do not describe {len(pos)} patches")
    if (pos < 0).any():
        raise ValueError("patch positions must be non-negative")
    item = torch.repeat_interleave(torch.arange(len(counts)), counts)
    t, h, w = pos.unbind(1)
    keys, frame = torch.unique(item * (int(t.max()) + 1) + t, sorted=True, return_inverse=True)
    n_frames = len(keys)
    rows = torch.zeros(n_frames, dtype=torch.long).scatter_reduce(0, frame, h, "amax") + 1
    cols = torch.zeros(n_frames, dtype=torch.long).scatter_reduce(0, frame, w, "amax") + 1
    sizes = torch.bincount(frame, minlength=n_frames)
    slot = h * cols[frame] + w
    max_len = int((rows * cols).max())
    distinct = torch.bincount(torch.unique(frame * max_len + slot) // max_len, minlength=n_frames)
    bad = torch.nonzero((sizes != rows * cols) | (distinct != sizes)).flatten()
    if len(bad):
        f = int(bad[0])
        first = int(torch.nonzero(frame == f)[0])
        raise ValueError(
            f"the SigLIP2 tower needs dense frames (modes {DENSE_MODES}), but media item {int(item[first])}, "
            f"frame t={int(t[first])} has {int(distinct[f])} distinct patches "
            f"for a {int(rows[f])}x{int(cols[f])} grid (a sparse codec selection?)"
        )
    return FrameLayout(frame, slot, torch.stack([rows, cols], 1), max_len)


def naflex_pixels(pixels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 ``[N, 3, p, p]`` → ``[N, p·p·3]``: (ph, pw, C) channel-fastest, ``(x / 255 - 0.5) / 0.5``."""
    n, c, p, _ = pixels.shape
    flat = pixels.permute(0, 2, 3, 1).reshape(n, p * p * c).to(torch.float32)
    return ((flat / 255.0 - 0.5) / 0.5).to(dtype)


def naflex_inputs(
    media: MediaBatch,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    layout: FrameLayout | None = None,
) -> dict[str, Tensor]:
    """``pixel_values [F, L, p·p·3]``, ``pixel_attention_mask [F, L]``, ``spatial_shapes [F, 2]`` of a
    batch (one NaFlex image per frame, padded to the longest; see the module docstring)."""
    layout = layout or frame_layout(media.positions, media.cu_seqlens)
    flat = naflex_pixels(media.pixels.to(device, non_blocking=True), dtype)
    frame, slot = layout.frame.to(device), layout.slot.to(device)
    values = flat.new_zeros(layout.num_frames, layout.max_len, flat.shape[1])
    values = values.index_put((frame, slot), flat)
    lengths = layout.spatial_shapes.prod(1).to(device)
    mask = (torch.arange(layout.max_len, device=device)[None] < lengths[:, None]).to(torch.long)
    return {
        "pixel_values": values,
        "pixel_attention_mask": mask,
        "spatial_shapes": layout.spatial_shapes.to(device),
    }


class Siglip2Tower(VisionTower):
    """See the module docstring. ``vision_model``: a ``transformers.Siglip2VisionModel``."""

    def __init__(self, vision_model: Any, output_layer: int = -2) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.output_layer = output_layer
        self.layer_index = _resolve_layer(output_layer, vision_model.config.num_hidden_layers)
        self.vision_model.use_head = False  # the pooling head is never used; its weights stay for saving
        self.freeze_unused()

    @property
    def config(self):
        return self.vision_model.config

    @property
    def spec(self) -> TowerSpec:
        return TowerSpec(self.config.patch_size, frames_per_token=1, merge=1, modes=DENSE_MODES)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, media: MediaBatch) -> TowerOutput:
        self.check_media(media)
        device = self.device
        dtype = self.vision_model.embeddings.patch_embedding.weight.dtype
        if media.num_patches == 0:
            return patch_output(torch.zeros(0, self.hidden_size, device=device, dtype=dtype), media)
        layout = frame_layout(media.positions, media.cu_seqlens)
        inputs = naflex_inputs(media, device, dtype, layout)
        last = self.output_layer == -1
        out = self.vision_model(**inputs, output_hidden_states=not last)
        hidden = out.last_hidden_state if last else out.hidden_states[self.layer_index]
        return patch_output(hidden[layout.frame.to(device), layout.slot.to(device)], media)

    def save_pretrained(self, directory: str | Path) -> None:
        """``config.json`` (a ``siglip2_vision_model`` config) + ``model.safetensors``
        (keys ``embeddings.*``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.vision_model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        self.config.to_json_file(str(directory / CONFIG_NAME))

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Non-reentrant recomputation of the encoder blocks."""
        set_hf_checkpointing(self.vision_model, enabled)

    def blocks(self) -> list[nn.Module]:
        return list(self.vision_model.encoder.layers)

    def attention_width(self) -> int:
        return self.layer_index * self.config.hidden_size  # blocks after output_layer run but are not used

    def unused_parameter_names(self) -> list[str]:
        """The pooling head; with ``output_layer != -1`` also the post-norm and the blocks after it."""
        unused = []
        for name, _ in self.named_parameters():
            parts = name.split(".")  # vision_model.{embeddings,encoder,post_layernorm,head}.…
            if parts[1] == "head":
                unused.append(name)
            elif self.output_layer != -1 and parts[1] == "post_layernorm":
                unused.append(name)
            elif parts[1:3] == ["encoder", "layers"] and int(parts[3]) >= self.layer_index:
                unused.append(name)
        return unused


def _preset_config(cfg: TowerConfig):
    if cfg.size not in PRESETS:
        raise ValueError(f"unknown SigLIP2 size {cfg.size!r}; presets: {sorted(PRESETS)}")
    return _make_config(PRESETS[cfg.size], dict(cfg.options))


def _path_config(cfg: TowerConfig):
    directory = resolve_checkpoint_dir(cfg.path)
    base, full = _read_vision_config(directory)
    return directory, _make_config(base, dict(cfg.options)), full


def spec_siglip2(cfg: TowerConfig) -> TowerSpec:
    """Patch size of the preset / overrides, or of a local checkpoint's config.json (a hub id is not
    fetched for this: NaFlex checkpoints use patch 16, and the built tower is checked against it); one
    token per patch."""
    if cfg.path is not None and not is_local(cfg.path):
        return TowerSpec(
            int(cfg.options.get("patch_size", 16)), frames_per_token=1, merge=1, modes=DENSE_MODES
        )
    config = _path_config(cfg)[1] if cfg.path is not None else _preset_config(cfg)
    return TowerSpec(config.patch_size, frames_per_token=1, merge=1, modes=DENSE_MODES)


def validate_siglip2(cfg: TowerConfig) -> None:
    """Known size (without a path), real ``Siglip2VisionConfig`` override keys, ``output_layer`` in range
    (for a preset, or a local checkpoint folder; a hub id is checked when it is built)."""
    try:
        if cfg.path is None:
            config = _preset_config(cfg)
        elif Path(cfg.path).is_dir():
            config = _path_config(cfg)[1]
        else:
            _check_overrides(dict(cfg.options))
            return
        _resolve_layer(cfg.output_layer, config.num_hidden_layers)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"model.tower (siglip2): {e}") from None


def load_vision_model(cfg: TowerConfig):
    """The ``Siglip2VisionModel`` of ``cfg.path`` (see the module docstring), strictly loaded, fp32."""
    from transformers import Siglip2VisionModel

    directory, config, full = _path_config(cfg)
    state = vision_state_dict(read_state_dict(directory), full)
    with torch.device("meta"):
        model = Siglip2VisionModel(config)
    try:
        check_state_dict(model, state)
    except ValueError as e:
        raise ValueError(f"{cfg.path}: {e}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"{cfg.path}: tensors not in the checkpoint stayed uninitialised: {left}")
    return model


def build_siglip2(cfg: TowerConfig) -> Siglip2Tower:
    """Pretrained weights from ``cfg.path`` (hub id or folder), else a random ``cfg.size`` model."""
    if cfg.path is not None:
        model = load_vision_model(cfg)
    else:
        from transformers import Siglip2VisionModel

        model = Siglip2VisionModel(_preset_config(cfg))
    return Siglip2Tower(model, cfg.output_layer)


TOWER = Tower(
    "siglip2", "SigLIP2 NaFlex (transformers)", Siglip2Options, spec_siglip2, validate_siglip2, build_siglip2
)


__all__ = [
    "TOWER",
    "Siglip2Options",
    "PRESETS",
    "FrameLayout",
    "Siglip2Tower",
    "build_siglip2",
    "config_fields",
    "frame_layout",
    "load_vision_model",
    "naflex_inputs",
    "naflex_pixels",
    "spec_siglip2",
    "validate_siglip2",
    "vision_state_dict",
]
