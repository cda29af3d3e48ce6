"""Save / load: safetensors weights + an HF-style ``config.json``.

Our parameter names are the released checkpoint's names, so loading
``lmms-lab-encoder/onevision-encoder-large`` (or any folder in that layout) is a direct, strict
state-dict load; only its ``config.json`` keys need mapping (most are identical to our field names).
No ``trust_remote_code``: the released modeling code is never imported.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .config import ViTConfig, _check_keys

if TYPE_CHECKING:
    from .vit import OVEncoder

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
MODEL_TYPE = "onevision_encoder"

# Keys of the released config.json that map one-to-one onto ViTConfig fields.
_HF_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "layer_norm_type",
    "rope_theta",
    "rope_temporal_size",
    "use_head",
    "initializer_range",
)
# Our own fields that are saved too (runtime switches such as attn_backend are not).
_EXTRA_FIELDS = ("rope_split", "rope_mode", "abs_pos_embed", "image_mean", "image_std")
# Generic HF / remote-code keys that carry no architecture information.
_IGNORED_HF_KEYS = {
    "architectures",
    "auto_map",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "_name_or_path",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "use_return_dict",
    "attention_dropout",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "tie_word_embeddings",
    "id2label",
    "label2id",
    "problem_type",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
}
_STRIP_PREFIXES = ("vision_model.", "onevision_encoder.", "model.")


def config_to_hf_dict(cfg: ViTConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    out: dict[str, Any] = {"model_type": MODEL_TYPE, "architectures": ["OVEncoder"]}
    out.update({k: d[k] for k in _HF_FIELDS + _EXTRA_FIELDS})
    return out


def config_from_hf_dict(d: dict[str, Any], **overrides: Any) -> ViTConfig:
    """Map a released (or our own) ``config.json`` dict to :class:`ViTConfig`.

    Released configs have no ``rope_mode`` -> ``compatible`` (the rule their weights were trained with).
    """
    if d.get("attention_dropout", 0.0):
        log.warning(
            "attention_dropout=%s in config.json is ignored (no attention dropout)", d["attention_dropout"]
        )
    if "rope_temporal_size" in d and d["rope_temporal_size"] is None:
        raise ValueError("rope_temporal_size=None (per-clip frame count) is not supported; need a fixed grid")
    fields = {k: d[k] for k in _HF_FIELDS + _EXTRA_FIELDS if k in d}
    unknown = sorted(set(d) - set(fields) - _IGNORED_HF_KEYS)
    if unknown:
        log.warning("ignoring unrecognised config.json keys: %s", unknown)
    _check_keys(overrides)
    return ViTConfig(**{**fields, **overrides})


def _preprocessor_stats(directory: Path) -> dict[str, Any]:
    path = directory / PREPROCESSOR_NAME
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    return {k: tuple(d[k]) for k in ("image_mean", "image_std") if k in d}


def save_pretrained(model: OVEncoder, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    text = json.dumps(config_to_hf_dict(model.config), indent=2, sort_keys=True)
    (directory / CONFIG_NAME).write_text(text + "\n")


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint_dir(name_or_path: str | Path) -> Path:
    """A local folder as is; otherwise a Hugging Face hub id fetched with ``snapshot_download``.

    A missing path that cannot be a hub id (absolute, ``./``, more than one ``/``...) is a missing
    folder: one ``ValueError`` naming it, never a network call. A hub id that cannot be fetched is a
    ``ValueError`` saying so (not the network library's exception)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; expected a checkpoint folder or a hub id")
    text = str(name_or_path)
    if not _HUB_ID_RE.match(text) or text.startswith(("./", "../", "~")):
        raise ValueError(f"{text}: no such checkpoint folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(f"{text!r} is not a local folder and huggingface_hub is unavailable") from e
    patterns = ["*.json", "*.safetensors"]
    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: one clear line
        raise ValueError(
            f"{text}: not a local folder, and fetching it from the Hugging Face hub failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    index = directory / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no .safetensors weights found in {directory}")
    if (directory / WEIGHTS_NAME).is_file():
        files = [directory / WEIGHTS_NAME]
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in _STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def check_state_dict(model: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """Raise ``ValueError`` listing missing / unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {shapes}")
    if problems:
        raise ValueError("checkpoint does not match the model:\n  " + "\n  ".join(problems))


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, Tensor], assign: bool = False) -> None:
    state = _strip_prefix(state)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=assign)


def read_config(name_or_path: str | Path, **overrides: Any) -> ViTConfig:
    """The :class:`ViTConfig` of a saved folder or a released checkpoint (folder or hub id), no weights."""
    directory = resolve_checkpoint_dir(name_or_path)
    return _read_config(directory, overrides)


def _read_config(directory: Path, overrides: dict[str, Any]) -> ViTConfig:
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        hint = ""
        if (directory / "llava_ov.json").is_file() and (directory / "vision_tower").is_dir():
            hint = f" (an LMM export: its vision tower is {directory / 'vision_tower'})"
        raise ValueError(f"no {CONFIG_NAME} in {directory}{hint}")
    raw = json.loads(config_path.read_text())
    stats = {} if "image_mean" in raw else _preprocessor_stats(directory)
    return config_from_hf_dict({**raw, **stats}, **overrides)


def load_pretrained(
    cls: type[OVEncoder],
    name_or_path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    **overrides: Any,
) -> OVEncoder:
    """Load our own saved folder or a released checkpoint (folder or hub id) as a ``cls`` (the model
    class is passed in, so this module never imports the model); strict key check.

    ``overrides`` change config fields (e.g. ``attn_backend="sdpa_loop"``, ``use_head=False`` is not
    allowed for a checkpoint that has a head: the strict check reports the unexpected keys).
    """
    directory = resolve_checkpoint_dir(name_or_path)
    cfg = _read_config(directory, overrides)
    with torch.device("meta"):
        model = cls(cfg)
    load_state_dict_strict(model, read_state_dict(directory), assign=True)
    return model.to(device=device, dtype=dtype)


__all__ = [
    "CONFIG_NAME",
    "PREPROCESSOR_NAME",
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "check_state_dict",
    "config_from_hf_dict",
    "config_to_hf_dict",
    "load_pretrained",
    "load_state_dict_strict",
    "read_config",
    "read_state_dict",
    "resolve_checkpoint_dir",
    "save_pretrained",
]
