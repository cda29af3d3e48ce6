"""Qwen3-VL's vision transformer as the LMM's vision tower (transformers' ``Qwen3VLVisionModel``).

**Merger decision.** The tower outputs the tokens of its *own* 2×2 patch merger (``merger``: LayerNorm →
Linear → GELU → Linear to ``out_hidden_size``), not the unmerged block outputs: the merger was pretrained
jointly with the ViT and its output already is the token Qwen3-VL's LLM reads, so keeping it reuses that
training instead of asking a fresh projector to learn the 2×2 grouping. The LMM's projector therefore
runs with ``projector.merge=1`` (``ModelConfig.validate`` rejects 2 for this tower) on
``hidden_size = out_hidden_size`` features. Because the merger consumes the last block's output,
``TowerConfig.output_layer`` must be ``-1`` (:func:`validate_qwen3_vit` rejects anything else).
Deepstack: the model is built with ``deepstack_visual_indexes=[]`` (those features feed Qwen3-VL's own
LLM layers, which this LMM does not have): the deepstack mergers are not part of the model, and a
checkpoint's ``deepstack_merger_list.*`` tensors are dropped explicitly before the strict key check.

**Input.** Every media item must be dense frames of one gh × gw grid (modes ``frames`` / ``image`` /
``collage``; a sparse codec selection raises ``ValueError``). Frames are ordered by t; one row of the
model input is one 16 × 16 patch in ``temporal_patch_size`` (2) consecutive frames — a *tubelet* —
flattened channel, frame, row, column (``[3 · 2 · 16 · 16]``, the layout of transformers'
``Qwen2VLImageProcessor`` / ``Qwen3VLVideoProcessor`` patchify), and rows are ordered
``(tubelet, h // 2, w // 2, h % 2, w % 2)`` so that each 2×2 merge block is 4 consecutive rows;
``grid_thw`` = (tubelets, padded rows, padded columns). All media of a batch run in one packed call
(attention never crosses a tubelet, so packing equals separate calls).

**Padding** (the rule :class:`llava_ov.model.merge.TokenCounter` counts with ceil): an odd frame count
repeats the last frame (an image = its one frame twice, as the processors do), and an odd number of
patch rows / columns repeats the last row / column of patches (edge replication: the padded patches
stay in the image's own content distribution, unlike black patches). A dense item of T frames of
gh × gw patches thus gives ``ceil(T/2) · ceil(gh/2) · ceil(gw/2)`` tokens, ordered
``(tubelet, h // 2, w // 2)``, each at position ``(t of the tubelet's first frame, h // 2, w // 2)``.

**Normalisation**: ``(x / 255 - mean) / std`` with mean = std = (0.5, 0.5, 0.5) by default — the
defaults of transformers' ``Qwen3VLVideoProcessor`` (``IMAGENET_STANDARD_MEAN`` / ``_STD``), and what
Qwen3-VL's preprocessor config sets for images too. (``Qwen2VLImageProcessor``'s class defaults are
the OpenAI-CLIP constants of Qwen2-VL, not these.) A checkpoint folder's ``preprocessor_config.json``
(``image_mean`` / ``image_std``) wins over the default, and ``overrides`` win over both.

**Loading** (``TowerConfig.path``: hub id or folder), never a silent random init:

* a full Qwen3-VL checkpoint (``config.json`` with ``model_type: qwen3_vl`` and a ``vision_config``;
  weights under ``model.visual.`` — or ``visual.`` in older layouts — possibly sharded with
  ``model.safetensors.index.json``): only the vision tensors are read (only the shards holding them);
* our own :meth:`Qwen3ViTTower.save_pretrained` folder (``config.json`` with ``model_type:
  qwen3_vl_vision``; unprefixed weights; ``preprocessor_config.json``).

Missing / unexpected keys or shape mismatches raise ``ValueError`` naming them. Without a path,
``size`` picks a preset (random weights): ``debug`` (tiny, tests) or ``8b`` (Qwen3-VL-8B's ViT: depth
27, hidden 1152, out 4096; heads 16, MLP 4304, 48 × 48 position grid = transformers' config defaults).
The tower's options (``TowerConfig.options``: the ``qwen3_vit`` section, then ``overrides``) change
config keys on top (architecture keys of :data:`ARCH_KEYS`, ``image_mean`` / ``image_std``,
``attn_implementation``). Settings and checkpoint reading live in :mod:`.qwen3_vit_checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from encoder.typed_config import ConfigError
from llava_ov.data.dataset import MediaBatch
from llava_ov.model.hf import set_hf_checkpointing
from llava_ov.model.merge import dense_grid
from llava_ov.model.towers.base import DENSE_MODES, Tower, TowerOutput, TowerSpec, VisionTower, is_local
from llava_ov.model.towers.qwen3_vit_checkpoint import (
    ARCH_KEYS,
    CONFIG_NAME,
    PREPROCESSOR_NAME,
    PRESETS,
    QWEN3_VL_MEAN,
    QWEN3_VL_STD,
    VISION_MODEL_TYPE,
    WEIGHTS_NAME,
    Qwen3ViTOptions,
    _check_arch,
    _hf_classes,
    _settings,
    _stats,
    load_vision_state,
    read_vision_state,
)

if TYPE_CHECKING:
    from llava_ov.model.towers.config import TowerConfig

# ----------------------------------------------------------------------------- inputs


@dataclass
class Qwen3ViTInputs:
    """The packed model input of a :class:`MediaBatch` and where its merged tokens lie."""

    rows: Tensor  # float32 [R, 3 · tp · p · p] normalised tubelet patches, merge-block order
    grid_thw: Tensor  # long [M, 3]: (tubelets, padded rows, padded columns) per media item
    positions: Tensor  # int [R / m², 3]: (t of the tubelet's first frame, h // m, w // m) per token
    cu_seqlens: Tensor  # int32 [M + 1]: token offsets per media item


def _item_layout(pos: Tensor, index: int, start: int, tp: int, m: int) -> tuple[Tensor, list[int], Tensor]:
    """Patch indices of one dense media item in row order (with padding repeats), its grid_thw and the
    positions of its tokens."""
    try:
        frames, rows, cols = dense_grid(pos)
    except ValueError as e:
        raise ValueError(f"media item {index}: {e}") from None
    t, h, w = pos.unbind(1)
    t_values, t_rank = torch.unique(t, sorted=True, return_inverse=True)
    cells = torch.full((frames * rows * cols,), -1, dtype=torch.long)
    cells[(t_rank * rows + h) * cols + w] = torch.arange(start, start + len(pos))
    if bool((cells < 0).any()):
        raise ValueError(f"media item {index}: duplicate patch positions (not a dense grid of {rows}x{cols})")
    frames_p, rows_p, cols_p = -(-frames // tp) * tp, -(-rows // m) * m, -(-cols // m) * m
    fi = torch.arange(frames_p).clamp(max=frames - 1)  # an odd last tubelet repeats its frame
    hi = torch.arange(rows_p).clamp(max=rows - 1)  # odd rows / columns repeat the last patch row / column
    wi = torch.arange(cols_p).clamp(max=cols - 1)
    grid = cells.view(frames, rows, cols)[fi][:, hi][:, :, wi]
    nt, bh, bw = frames_p // tp, rows_p // m, cols_p // m
    # [nt, tp, bh, m, bw, m] → rows (nt, bh, bw, mh, mw), each holding its tp frames
    order = grid.view(nt, tp, bh, m, bw, m).permute(0, 2, 4, 3, 5, 1).reshape(-1)
    tt, hh, ww = torch.meshgrid(
        t_values[torch.arange(nt) * tp], torch.arange(bh), torch.arange(bw), indexing="ij"
    )
    token_pos = torch.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)], 1)
    return order, [nt, rows_p, cols_p], token_pos


def build_inputs(
    media: MediaBatch,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    image_mean: tuple[float, float, float] = QWEN3_VL_MEAN,
    image_std: tuple[float, float, float] = QWEN3_VL_STD,
    device: torch.device | str | None = None,
) -> Qwen3ViTInputs:
    """``hidden_states`` rows and ``grid_thw`` of ``Qwen3VLVisionModel`` for dense ``media`` (module
    docstring). Index bookkeeping runs on CPU; the pixel gather and normalisation on ``device``."""
    tp, m, p = temporal_patch_size, merge_size, media.patch_size
    positions = media.positions.detach().cpu().to(torch.long)
    bounds = [int(c) for c in media.cu_seqlens.tolist()]
    orders, grids, token_pos, counts = [], [], [], []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b <= a:
            raise ValueError(f"media item {i} has no patches")
        order, grid, pos = _item_layout(positions[a:b], i, a, tp, m)
        orders.append(order)
        grids.append(grid)
        token_pos.append(pos)
        counts.append(len(pos))
    device = torch.device(device) if device is not None else media.pixels.device
    dim = 3 * tp * p * p
    if not orders:
        empty = torch.zeros(0, 3, dtype=media.positions.dtype)
        return Qwen3ViTInputs(
            torch.zeros(0, dim, device=device),
            torch.zeros(0, 3, dtype=torch.long, device=device),
            empty,
            torch.zeros(1, dtype=torch.int32),
        )
    index = torch.cat(orders).to(device)
    pixels = media.pixels.to(device, non_blocking=True)[index].float()  # [R · tp, 3, p, p]
    mean = torch.tensor(image_mean, device=device).view(1, 1, 3, 1, 1) * 255.0
    std = torch.tensor(image_std, device=device).view(1, 1, 3, 1, 1) * 255.0
    rows = ((pixels.view(-1, tp, 3, p, p) - mean) / std).transpose(1, 2).reshape(-1, dim)  # (C, tp, ph, pw)
    cu = torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int32)
    return Qwen3ViTInputs(
        rows,
        torch.tensor(grids, dtype=torch.long, device=device),
        torch.cat(token_pos).to(media.positions.dtype),
        cu,
    )


# ----------------------------------------------------------------------------- tower


class Qwen3ViTTower(VisionTower):
    """``Qwen3VLVisionModel`` (no deepstack) → its merged tokens (module docstring)."""

    def __init__(
        self,
        model,
        image_mean: tuple[float, float, float] = QWEN3_VL_MEAN,
        image_std: tuple[float, float, float] = QWEN3_VL_STD,
    ) -> None:
        super().__init__()
        if list(model.config.deepstack_visual_indexes):
            raise ValueError(
                "build the Qwen3VLVisionModel with deepstack_visual_indexes=[] (features unused)"
            )
        _check_arch(model.config)
        self.model = model
        self.image_mean = _stats(image_mean, "image_mean")
        self.image_std = _stats(image_std, "image_std")

    @property
    def config(self):
        return self.model.config

    @property
    def spec(self) -> TowerSpec:
        c = self.config
        return TowerSpec(
            c.patch_size,
            frames_per_token=c.temporal_patch_size,
            merge=c.spatial_merge_size,
            modes=DENSE_MODES,
        )

    @property
    def hidden_size(self) -> int:
        return self.config.out_hidden_size

    def blocks(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def attention_width(self) -> int:
        return self.config.depth * self.config.hidden_size

    def prepare(self, media: MediaBatch) -> Qwen3ViTInputs:
        """The model input of ``media`` (on the tower's device)."""
        self.check_media(media)
        c = self.config
        return build_inputs(
            media, c.temporal_patch_size, c.spatial_merge_size, self.image_mean, self.image_std, self.device
        )

    def run_model(self, rows: Tensor, grid_thw: Tensor) -> Tensor:
        """Merged tokens ``[R / m², out_hidden_size]`` of the HF model on prepared rows."""
        out = self.model(hidden_states=rows, grid_thw=grid_thw)
        if isinstance(out, tuple):  # transformers 4.57: (merged, deepstack features)
            return out[0]
        return out.pooler_output  # 5.x: last_hidden_state is unmerged, pooler_output the merger's output

    def forward(self, media: MediaBatch) -> TowerOutput:
        inputs = self.prepare(media)
        if inputs.rows.shape[0] == 0:
            features = inputs.rows.new_zeros(0, self.hidden_size, dtype=self.model.dtype)
        else:
            features = self.run_model(inputs.rows, inputs.grid_thw)
        return TowerOutput(features, inputs.positions, inputs.cu_seqlens)

    def save_pretrained(self, directory: str | Path) -> None:
        """``model.safetensors`` (unprefixed), ``config.json`` (model_type ``qwen3_vl_vision``) and
        ``preprocessor_config.json`` (normalisation, patch sizes)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        c = self.config
        config: dict[str, Any] = {"model_type": VISION_MODEL_TYPE, "architectures": ["Qwen3VLVisionModel"]}
        for key in ARCH_KEYS:
            value = getattr(c, key, None)
            if value is not None:
                config[key] = list(value) if isinstance(value, tuple) else value
        config["deepstack_visual_indexes"] = []
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        pre = {
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "patch_size": c.patch_size,
            "temporal_patch_size": c.temporal_patch_size,
            "merge_size": c.spatial_merge_size,
        }
        (directory / PREPROCESSOR_NAME).write_text(json.dumps(pre, indent=2, sort_keys=True) + "\n")

    def set_activation_checkpointing(self, enabled: bool) -> None:
        set_hf_checkpointing(self.model, enabled)


# ----------------------------------------------------------------------------- registry functions


def spec_qwen3_vit(cfg: TowerConfig) -> TowerSpec:
    """Patch / tubelet / merge sizes of the configured ViT (16, 2, 2 for every Qwen3-VL); dense modes only.
    Reads a local checkpoint's config (not its weights); a hub id is not fetched for this (every Qwen3-VL
    uses 16 / 2 / 2, and the built tower is checked against it)."""
    if cfg.path is not None and not is_local(cfg.path):
        return TowerSpec(16, frames_per_token=2, merge=2, modes=DENSE_MODES)
    c = _settings(cfg).vision_config()
    return TowerSpec(
        c.patch_size, frames_per_token=c.temporal_patch_size, merge=c.spatial_merge_size, modes=DENSE_MODES
    )


def validate_qwen3_vit(cfg: TowerConfig) -> None:
    """At config load: ``output_layer == -1``, a known ``size`` (without a path), real override keys and
    values (``encoder.typed_config.ConfigError`` otherwise). A path is not read here."""
    if cfg.output_layer != -1:
        raise ConfigError(
            f"model.tower (qwen3_vit): output_layer must be -1 (the tower's own merger reads the "
            f"last block's output), got {cfg.output_layer}"
        )
    try:
        settings = _settings(cfg, read_checkpoint=False)
        if cfg.path is None:
            settings.vision_config()
    except (ImportError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"model.tower (qwen3_vit): {e}") from None


def build_qwen3_vit(cfg: TowerConfig) -> Qwen3ViTTower:
    """Pretrained weights from ``cfg.path`` (full Qwen3-VL checkpoint or a saved tower; strict), else a
    random ``cfg.size`` preset; ``cfg.overrides`` on top."""
    if cfg.output_layer != -1:
        raise ValueError(f"qwen3_vit: output_layer must be -1, got {cfg.output_layer}")
    settings = _settings(cfg)
    _, model_cls = _hf_classes()
    model = model_cls(settings.vision_config())
    if settings.directory is not None:
        state = read_vision_state(settings.directory, settings.prefix)
        load_vision_state(model, state, settings.directory)
    return Qwen3ViTTower(model, settings.image_mean, settings.image_std)


TOWER = Tower(
    "qwen3_vit",
    "Qwen3-VL vision (transformers)",
    Qwen3ViTOptions,
    spec_qwen3_vit,
    validate_qwen3_vit,
    build_qwen3_vit,
    merges_itself=True,
)


__all__ = [
    "TOWER",
    "ARCH_KEYS",
    "PRESETS",
    "QWEN3_VL_MEAN",
    "QWEN3_VL_STD",
    "Qwen3ViTInputs",
    "Qwen3ViTOptions",
    "Qwen3ViTTower",
    "build_inputs",
    "build_qwen3_vit",
    "load_vision_state",
    "read_vision_state",
    "spec_qwen3_vit",
    "validate_qwen3_vit",
]
