"""Synthetic motion-QA: short H.264 clips of shapes with one-word questions that need motion.

Question types (``qtype``) and their closed answer sets:

* ``direction``   "Which direction does the {color} {shape} move?" → left / right / up / down
* ``which_moved`` two objects, one moves: "Which object moves? Answer with its colour." → a colour
* ``appeared``    an object shows up for a few frames: "Which shape appears briefly?" → a shape
* ``count``       an object disappears 1-3 times: "How many times does the {color} {shape} blink?"
                  → one / two / three
* ``color``       "What colour is the {shape}?" → a colour (appearance; the only static question)

A mover starts where a move of its length would fit in either direction (``travel`` <= 0.5 of the
free range), so frame 0 alone does not give the direction away.

Colours: red, green, blue, yellow. Shapes: square, circle, triangle. Sample i of a split has
qtype ``qtypes[i % Q]`` and, within its qtype, answers cycle through the class list, so classes are
balanced to +-1. Everything else (background texture, shapes/colours of distractors, positions) is
drawn from ``np.random.default_rng([seed, i])``: deterministic per seed; train and held-out use
different seeds. Each record is LLaVA-style JSON (``<video>`` placeholder) with ``qtype``,
``answer`` and the scene's ground truth (``scene``: per-frame positions/visibility per object).

:func:`generate_synthetic_qa` writes ``{out_dir}/{split}/shard-NNNNNN.tar`` with a process pool and a
progress bar, and a ``manifest.json`` holding a hash of the config: a second call with the same
config returns the existing shards at once; a different config regenerates the split.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import typing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from encoder.codec import CodecConfig, DecodeConfig, patchify, video_settings
from encoder.codec.synthetic import write_video
from encoder.typed_config import ConfigError, check_choices, merge_config
from llava_ov.data.shards import ShardWriter, expand_env, init_worker_process
from llava_ov.data.synthetic_scenes import (
    COLORS,
    COUNTS,
    DIRECTIONS,
    SHAPES,
    SceneParams,
    background,
    build_scene,
    render,
)

FORMAT_VERSION = 3  # 3: clips encoded without x264 mbtree (byte-reproducible; see encoder_options)
QTYPES = ("direction", "which_moved", "appeared", "count", "color")
ANSWERS: dict[str, tuple[str, ...]] = {
    "direction": tuple(DIRECTIONS),
    "which_moved": tuple(COLORS),
    "appeared": SHAPES,
    "count": COUNTS,
    "color": tuple(COLORS),
}
QUESTIONS = {
    "direction": "Which direction does the {color} {shape} move?",
    "which_moved": "Which object moves? Answer with its colour.",
    "appeared": "Which shape appears briefly?",
    "count": "How many times does the {color} {shape} blink?",
    "color": "What colour is the {shape}?",
}
SUFFIX = " Answer with one word."
SPLITS = ("train", "heldout")
Store = Literal["mp4", "npz", "both"]
STORES: tuple[str, ...] = typing.get_args(Store)


@dataclass
class SyntheticQAConfig:
    out_dir: str = "${LLAVA_OV_CACHE:-.cache/llava_ov}/synthetic_motion_qa"
    num_train: int = 2000
    num_heldout: int = 200
    size: int = 112  # frame side (pixels, even)
    num_frames: int = 16
    fps: float = 8.0
    crf: float = 18.0  # x264 quality (lower = closer to the rendered colours)
    seed: int = 0
    heldout_seed: int = 1_000_003
    qtypes: list[str] = field(default_factory=lambda: list(QTYPES))
    object_size: float = 0.22
    travel: float = 0.45  # of the free range; <= 0.5 so that frame 0 does not give the direction away
    store: Store = "mp4"  # mp4 | npz (precomputed codec patches) | both (readers use the npz)
    codec: dict = field(default_factory=dict)  # CodecConfig overrides for store=npz
    samples_per_shard: int = 250
    workers: int = 0  # processes; 0 = all cores

    def validate(self) -> None:
        check_choices(self)
        if bad := sorted(set(self.qtypes) - set(QTYPES)):
            raise ConfigError(f"unknown qtypes {bad}; expected some of {QTYPES}")
        if not self.qtypes:
            raise ConfigError("qtypes is empty")
        if self.size % 2 or self.size < 32:
            raise ConfigError(f"size must be even and >= 32, got {self.size}")
        if self.num_frames < 8:
            raise ConfigError(
                f"num_frames must be >= 8 (blinks and brief appearances need room), got {self.num_frames}"
            )
        if not 0.0 < self.travel <= 0.5:
            raise ConfigError(
                "travel must be in (0, 0.5] (a direction-neutral start needs room both ways), "
                f"got {self.travel}"
            )
        if self.num_train < 0 or self.num_heldout < 0:
            raise ConfigError("num_train and num_heldout must be >= 0")
        if self.store != "mp4":
            codec_config(self)  # merged and validated: e.g. size must be a multiple of the patch size

    @property
    def scene(self) -> SceneParams:
        return SceneParams(self.size, self.num_frames, self.object_size, self.travel)

    def split_seed(self, split: str) -> int:
        return {"train": self.seed, "heldout": self.heldout_seed}[split]

    def split_size(self, split: str) -> int:
        return {"train": self.num_train, "heldout": self.num_heldout}[split]


def codec_config(cfg: SyntheticQAConfig):
    """The CodecConfig matching the clips (all frames at native size) with ``cfg.codec`` on top."""

    base = CodecConfig(decode=DecodeConfig(num_frames=cfg.num_frames, input_size=cfg.size))
    return merge_config(base, cfg.codec)


# ----------------------------------------------------------------------------- one sample


def question_for(index: int, qtypes: list[str]) -> tuple[str, str]:
    """(qtype, answer) of sample ``index``: qtypes round-robin, answers cycling within each qtype."""
    qtype = qtypes[index % len(qtypes)]
    classes = ANSWERS[qtype]
    return qtype, classes[(index // len(qtypes)) % len(classes)]


def make_record(cfg: SyntheticQAConfig, split: str, index: int) -> tuple[dict[str, Any], np.ndarray]:
    """The JSON record and rendered frames uint8 [N, S, S, 3] of one sample."""
    qtype, answer = question_for(index, cfg.qtypes)
    rng = np.random.default_rng([cfg.split_seed(split), index])
    bg = background(rng, cfg.size)
    objects, slots = build_scene(qtype, answer, rng, cfg.scene)
    key = f"{split}_{index:06d}"
    record = {
        "id": key,
        "video": f"{key}.mp4",
        "conversations": [
            {"from": "human", "value": "<video>\n" + QUESTIONS[qtype].format(**slots) + SUFFIX},
            {"from": "gpt", "value": answer},
        ],
        "qtype": qtype,
        "answer": answer,
        "split": split,
        "scene": {"size": cfg.size, "num_frames": cfg.num_frames, "objects": [o.to_json() for o in objects]},
    }
    return record, render(objects, bg, cfg.num_frames)


def make_sample(
    cfg: SyntheticQAConfig, split: str, index: int
) -> tuple[str, bytes, list[tuple[str, bytes]], list[bytes]]:
    """(key, json bytes, media, precomputed npz) of one sample, per ``cfg.store``."""

    record, frames = make_record(cfg, split, index)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_video(path, frames, codec="h264", fps=cfg.fps, gop=cfg.num_frames, crf=cfg.crf)
        media = [("mp4", path.read_bytes())] if cfg.store in ("mp4", "both") else []
        npz = []
        if cfg.store in ("npz", "both"):
            sel = patchify(path, codec_config(cfg))
            sel.meta["path"] = record["video"]  # not the temporary file's: the same on every run
            npz = [sel.to_bytes()]
    return record["id"], json.dumps(record).encode(), media, npz


def scene_case(record: dict[str, Any]) -> str:
    """Which variant of its question type a record's scene is (for error analysis, from ``scene``):

    * ``color``: ``alone`` (the named object only), ``pair, target moves`` or ``pair, both still`` (the
      target beside a still object of another shape and colour: only its shape tells them apart);
    * ``direction`` / ``count``: ``alone`` or ``with distractor``;
    * ``appeared`` / ``which_moved``: ``pair`` (always two objects)."""
    objects = record["scene"]["objects"]
    if len(objects) == 1:
        return "alone"
    if record["qtype"] == "color":
        target = next(o for o in objects if o["role"] == "target")
        moves = len(set(target["x"])) > 1 or len(set(target["y"])) > 1
        return "pair, target moves" if moves else "pair, both still"
    return "with distractor" if record["qtype"] in ("direction", "count") else "pair"


# ----------------------------------------------------------------------------- generation + cache


def stored_codec(cfg: SyntheticQAConfig) -> dict[str, Any] | None:
    """The resolved codec settings that shape the stored patches (None with ``store: mp4``): the clips are
    videos, so settings only a still image or another mode reads are left out (two runs whose codec settings
    differ only there, e.g. pretraining's 4-frame mix and the LMM's image cap, share a set)."""
    return None if cfg.store == "mp4" else video_settings(codec_config(cfg))


def config_hash(cfg: SyntheticQAConfig, split: str) -> str:
    """Hash of everything that changes the content of ``split`` (not out_dir / workers, nor codec fields
    that do not shape the stored patches: :func:`stored_codec`)."""
    d = dataclasses.asdict(cfg)
    for k in ("out_dir", "workers", "num_train", "num_heldout", "seed", "heldout_seed"):
        d.pop(k)
    d |= {
        "codec": stored_codec(cfg),
        "split": split,
        "seed": cfg.split_seed(split),
        "count": cfg.split_size(split),
        "version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def dir_lock(root: Path) -> Iterator[None]:
    """Exclusive lock on ``root/.lock`` (several ranks may call the generator at once)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached(split_dir: Path, digest: str) -> list[Path] | None:
    try:
        manifest = json.loads((split_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    paths = [split_dir / name for name in manifest.get("shards", [])]
    if manifest.get("config_hash") != digest or not all(p.is_file() for p in paths):
        return None
    return paths


def _write_split(cfg: SyntheticQAConfig, split: str, split_dir: Path, progress: bool) -> list[Path]:
    if split_dir.exists():
        shutil.rmtree(split_dir)
    n = cfg.split_size(split)
    workers = cfg.workers or os.cpu_count() or 1
    job = partial(make_sample, cfg, split)
    bar = tqdm(total=n, desc=f"synthetic {split}", unit="clip", disable=not progress)
    with ShardWriter(split_dir, "shard", cfg.samples_per_shard) as writer:
        if workers == 1 or n < 32:
            results: Iterator = map(job, range(n))
            pool = None
        else:
            pool = ProcessPoolExecutor(workers, initializer=init_worker_process)
            results = pool.map(job, range(n), chunksize=max(1, min(32, n // (4 * workers))))
        try:
            for key, data, media, npz in results:
                writer.write(key, data, media, npz)
                bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            bar.close()
    return writer.paths


def generate_synthetic_qa(
    cfg: SyntheticQAConfig, progress: bool = True, splits: tuple[str, ...] = SPLITS
) -> dict[str, list[Path]]:
    """Shards of each split (generated, or found in the cache); ``{split: [shard paths]}``.

    Each split is cached under ``out_dir/<split>/<config hash>/``: a setting that changes the content
    (a tower swap's frames, a budget, a seed) builds a sibling and leaves the others in place, so
    switching back finds them. Old siblings are not removed (delete them by hand)."""
    cfg.validate()
    root = Path(expand_env(cfg.out_dir))
    out: dict[str, list[Path]] = {}
    with dir_lock(root):
        for split in splits:
            digest = config_hash(cfg, split)
            split_dir = (
                root / split / digest
            )  # a sibling per setting: a change never overwrites another's cache
            if cfg.split_size(split) == 0:
                out[split] = []
                continue
            cached = _cached(split_dir, digest)
            if cached is not None:
                out[split] = cached
                continue
            start = time.perf_counter()
            paths = _write_split(cfg, split, split_dir, progress)
            manifest = {
                "config_hash": digest,
                "config": dataclasses.asdict(cfg),
                "split": split,
                "num_samples": cfg.split_size(split),
                "shards": [p.name for p in paths],
                "seconds": round(time.perf_counter() - start, 2),
                "format_version": FORMAT_VERSION,
            }
            (split_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
            out[split] = paths
    return out


def tokenizer_texts(qtypes: tuple[str, ...] | list[str] = QTYPES) -> list[str]:
    """Every question (all colour/shape fillings), every answer and the template words: the corpus
    for :func:`llava_ov.text.build_tokenizer` on the synthetic set."""
    texts = ["user\n", "assistant\n", "system\n", SUFFIX.strip()]
    for qtype in qtypes:
        texts += list(ANSWERS[qtype])
        for color in COLORS:
            for shape in SHAPES:
                texts.append(QUESTIONS[qtype].format(color=color, shape=shape) + SUFFIX)
    return list(dict.fromkeys(texts))
