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
``attn_implementation``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from encoder.config import ConfigError
from llava_ov.data.dataset import MediaBatch
from llava_ov.model.config import TowerConfig
from llava_ov.model.llm import set_hf_checkpointing
from llava_ov.model.merge import dense_grid
from llava_ov.model.towers.base import DENSE_MODES, TowerOutput, TowerSpec, VisionTower, is_local

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
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
        from encoder.model.checkpoint import resolve_checkpoint_dir

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
        from safetensors.torch import save_file

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


# ----------------------------------------------------------------------------- checkpoints


def _tensor_files(directory: Path) -> dict[str, list[str]]:
    """safetensors file → the tensor names it holds (the index when sharded; headers only)."""
    from safetensors import safe_open

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
    from safetensors import safe_open

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
    from encoder.model.checkpoint import check_state_dict

    try:
        check_state_dict(model, state)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    model.load_state_dict(state, strict=True)


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
    values (``encoder.config.ConfigError`` otherwise). A path is not read here."""
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


__all__ = [
    "ARCH_KEYS",
    "PRESETS",
    "QWEN3_VL_MEAN",
    "QWEN3_VL_STD",
    "Qwen3ViTInputs",
    "Qwen3ViTTower",
    "build_inputs",
    "build_qwen3_vit",
    "load_vision_state",
    "read_vision_state",
    "spec_qwen3_vit",
    "validate_qwen3_vit",
]
