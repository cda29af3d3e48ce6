"""Labelled clips for the probe: the embedded synthetic classes, a folder per class, or webdataset shards.

Every source gives :class:`ClipRef` s per split (``train``, ``heldout``) and the class list; samples
that cannot be used (no label, an unknown class, no video) become :class:`llava_ov.data.Skipped`
markers, counted and logged by the caller. Layouts are described in
:class:`llava_ov.experiments.probe.config.ProbeDataConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from encoder.codec.synthetic import write_video
from llava_ov.data.shards import VIDEO_EXTS, ReadConfig, expand_env, iter_raw_samples, media_fields
from llava_ov.data.stats import Skipped
from llava_ov.data.synthetic_qa import dir_lock
from llava_ov.data.synthetic_scenes import SHAPES, SceneParams, background, build_scene, render, static_object
from llava_ov.experiments.probe.config import SPLITS, ProbeDataConfig, SyntheticProbeConfig, task_classes

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HELDOUT_ALIASES = ("heldout", "val", "validation", "test")


@dataclass
class ClipRef:
    """One labelled clip: a file (``path``) or the bytes of a shard member (``data`` + ``suffix``)."""

    key: str
    split: str
    label: str
    path: str | None = None
    data: bytes | None = None
    suffix: str = ".mp4"


@dataclass
class ClipSet:
    classes: list[str]
    clips: dict[str, list[ClipRef]]  # split -> clips
    skipped: list[Skipped]
    root: str = ""  # where the clips are (folder / shard pattern / synthetic cache)


def synthetic_frames(cfg: SyntheticProbeConfig, split: str, index: int) -> tuple[str, np.ndarray]:
    """(class, rendered frames uint8 [N, S, S, 3]) of clip ``index`` of ``split``."""
    classes = cfg.class_names
    label = classes[index % len(classes)]
    rng = np.random.default_rng([cfg.seed if split == "train" else cfg.heldout_seed, index])
    bg = background(rng, cfg.size)
    params = SceneParams(cfg.size, cfg.num_frames, cfg.object_size, cfg.travel)
    if cfg.task == "direction":
        objects, _ = build_scene("direction", label, rng, params)
    else:
        objects = [static_object(rng, params, str(rng.choice(SHAPES)), label, [], "target")]
    return label, render(objects, bg, cfg.num_frames)


def synthetic_hash(cfg: SyntheticProbeConfig) -> str:
    d = dataclasses.asdict(cfg)
    d.pop("out_dir")
    d |= {"classes": cfg.class_names, "version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _cached(root: Path, digest: str) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    files = manifest.get("files", [])
    return manifest.get("config_hash") == digest and all((root / f).is_file() for f in files)


def generate_synthetic(cfg: SyntheticProbeConfig, progress: bool = True) -> Path:
    """Write ``out_dir/<split>/<class>/<split>_NNNNN.mp4`` and a manifest holding the config's hash; a
    later call with the same config finds the manifest and returns at once, another config rewrites
    the clips. Returns the root folder."""
    cfg.validate()
    root = Path(expand_env(cfg.out_dir))
    digest = synthetic_hash(cfg)
    with dir_lock(root):
        if _cached(root, digest):
            return root
        (root / MANIFEST).unlink(missing_ok=True)
        start, files = time.perf_counter(), []
        for split in SPLITS:
            if (root / split).exists():
                shutil.rmtree(root / split)
            n = len(cfg.class_names) * (cfg.num_train if split == "train" else cfg.num_heldout)
            for i in tqdm(range(n), desc=f"probe clips {split}", unit="clip", disable=not progress):
                label, frames = synthetic_frames(cfg, split, i)
                rel = Path(split) / label / f"{split}_{i:05d}.mp4"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                write_video(root / rel, frames, codec="h264", fps=cfg.fps, gop=cfg.num_frames, crf=cfg.crf)
                files.append(str(rel))
        manifest = {
            "config_hash": digest,
            "config": dataclasses.asdict(cfg),
            "classes": cfg.class_names,
            "files": files,
            "seconds": round(time.perf_counter() - start, 2),
            "format_version": FORMAT_VERSION,
        }
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return root


# ----------------------------------------------------------------------------- class lists


def sort_classes(names: set[str] | list[str]) -> list[str]:
    names = set(names)
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _finish(
    classes: list[str],
    by_split: dict[str, list[ClipRef]],
    data: ProbeDataConfig,
    skipped: list[Skipped],
    root: str,
) -> ClipSet:
    """Fix the class list, drop clips of other classes (skipped), cap per class, check both splits."""
    found = sort_classes({c.label for c in by_split["train"]})
    classes = list(data.classes) or classes or found
    known = set(classes)
    out: dict[str, list[ClipRef]] = {}
    for split in SPLITS:
        kept, per_class = [], dict.fromkeys(classes, 0)
        for clip in by_split[split]:
            if clip.label not in known:
                why = f"class {clip.label!r} is not one of {classes}"
                skipped.append(Skipped(clip.key, "bad_sample", why, split))
                continue
            if data.max_per_class is not None and per_class[clip.label] >= data.max_per_class:
                continue
            per_class[clip.label] += 1
            kept.append(clip)
        if not kept:
            raise ValueError(f"{root}: no usable {split} clips")
        out[split] = kept
    if len(classes) < 2:
        raise ValueError(f"{root}: a probe needs at least two classes, found {classes}")
    return ClipSet(classes, out, skipped, root)


# ----------------------------------------------------------------------------- folder per class


def folder_clips(root: str | Path, data: ProbeDataConfig, classes: list[str] | None = None) -> ClipSet:
    """``root/<split>/<class>/*.<video suffix>``, sorted by class then file name."""
    root = Path(expand_env(str(root)))
    by_split: dict[str, list[ClipRef]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise ValueError(f"{root}: no {split}/ folder (expected ROOT/<split>/<class>/*.mp4)")
        clips = []
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and f.suffix.lower().lstrip(".") in VIDEO_EXTS:
                    key = f"{split}/{class_dir.name}/{f.name}"
                    clips.append(ClipRef(key, split, class_dir.name, path=str(f), suffix=f.suffix))
        by_split[split] = clips
    return _finish(classes or [], by_split, data, [], str(root))


# ----------------------------------------------------------------------------- webdataset shards


def _label(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    value = record.get("label", record.get("class"))
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _record_split(record: dict, key: str, fraction: float) -> str:
    split = str(record.get("split", "")).lower()
    if split == "train":
        return "train"
    if split in HELDOUT_ALIASES:
        return "heldout"
    return "heldout" if zlib.crc32(key.encode()) % 10_000 < fraction * 10_000 else "train"


def shard_clips(pattern: str, data: ProbeDataConfig) -> ClipSet:
    """Labelled clips of webdataset shards (see :class:`ProbeDataConfig` for the split and label rules)."""
    by_split: dict[str, list[ClipRef]] = {s: [] for s in SPLITS}
    skipped: list[Skipped] = []
    read = ReadConfig(shuffle_shards=False)
    passes = [(None, pattern)]
    if "{split}" in pattern:
        passes = [(s, pattern.replace("{split}", s)) for s in SPLITS]
    for fixed, spec in passes:
        for raw in iter_raw_samples(spec, read, source="probe"):
            if isinstance(raw, Skipped):
                skipped.append(raw)
                continue
            key = str(raw.get("__key__", "?"))
            try:
                record = json.loads(raw["json"]) if "json" in raw else None
            except (ValueError, UnicodeDecodeError):
                record = None
            label = _label(record)
            if label is None:
                skipped.append(Skipped(key, "bad_json", "no JSON with a 'label' or 'class' field", "probe"))
                continue
            videos = [f for f in media_fields(raw) if f.rsplit(".", 1)[-1].lower() in VIDEO_EXTS]
            if not videos:
                skipped.append(Skipped(key, "missing_media", "no video field (.mp4, .mkv, ...)", "probe"))
                continue
            split = fixed or _record_split(record, key, data.heldout_fraction)
            suffix = "." + videos[0].rsplit(".", 1)[-1]
            by_split[split].append(ClipRef(key, split, label, data=bytes(raw[videos[0]]), suffix=suffix))
    return _finish([], by_split, data, skipped, pattern)


def load_clips(data: ProbeDataConfig, synthetic: SyntheticProbeConfig, progress: bool = True) -> ClipSet:
    """The clips of ``data.source`` (the synthetic set is generated first when needed)."""
    if data.source == "synthetic":
        root = generate_synthetic(synthetic, progress)
        return folder_clips(root, data, classes=synthetic.class_names)
    if data.source == "folder":
        return folder_clips(data.root, data)
    return shard_clips(data.shards, data)


__all__ = [
    "ClipRef",
    "ClipSet",
    "folder_clips",
    "generate_synthetic",
    "load_clips",
    "shard_clips",
    "sort_classes",
    "synthetic_frames",
    "synthetic_hash",
    "task_classes",
]
