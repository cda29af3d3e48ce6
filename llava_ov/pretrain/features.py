"""Teacher embeddings of a dataset's media, streamed, for the concept bank
(``scripts/build_concept_bank.py``).

A video's embedding is its F uniformly sampled frames' embeddings concatenated in time order (so the
bank separates motions, not only appearances); an image is one frame. Teachers:

* ``pixels``: each frame average-pooled to ``pool × pool`` RGB values (no weights: the embedded
  default's teacher, and a baseline); with ``centre`` each frame minus the clip's mean frame first, so
  static content cancels and the bank clusters what moves (on the synthetic clips the top-1 centre's
  normalised mutual information with the mover's direction goes from 0.12 to 0.71, BENCHMARKS.md);
* ``ov_encoder``: an OV-Encoder export (``path``: folder or hub id), the pooled head output per frame;
* ``tower``: any vision tower of the LMM (``tower`` = ``siglip2`` / ``qwen3_vit`` / ``ov_encoder``,
  ``path`` = a transformers checkpoint folder or hub id, loaded strictly), each frame as an image, the
  mean of its output tokens;
* ``motion``: weight-free and codec-aligned: the clip's motion field (bitstream motion vectors when the
  stream has them, else block matching; :func:`encoder.codec.decode.decode_clip`) as a histogram of
  motion directions (``bins`` angles, weighted by magnitude) per time segment (``segments``), normalised
  by the clip's total motion. It ignores where things move and what they look like, so its concepts
  are kinds of motion; a student without absolute positions (the OV-Encoder's 3D RoPE) can predict
  them, while a pixel bank's concepts also encode absolute layout (BENCHMARKS.md, "Encoder pretraining");
* ``npy``: precomputed embeddings, ``path`` = a float ``.npy`` [N, D] (or [N, F, D], flattened) with
  ``keys`` = a text file of the N sample keys.

Samples come from webdataset shards (any media field: mp4 / image; a shard's ``npz`` selections are
ignored: the teacher sees decoded frames); a sample whose media does not decode is skipped and counted.
"""

from __future__ import annotations

import io
import logging
import tempfile
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from encoder.codec import CodecConfig
from encoder.codec.decode import DecodeConfig, DecodedClip, decode_clip
from encoder.codec.pipeline import patchify_image
from encoder.model import OVEncoder
from encoder.typed_config import ConfigError, check_choices
from llava_ov.data import pack_media
from llava_ov.data.shards import IMAGE_EXTS, VIDEO_EXTS, ReadConfig, iter_raw_samples
from llava_ov.data.stats import Skipped
from llava_ov.model import TowerConfig, build_tower

logger = logging.getLogger("llava_ov.pretrain")
TeacherKind = Literal["pixels", "motion", "ov_encoder", "tower", "npy"]
TEACHERS: tuple[str, ...] = typing.get_args(TeacherKind)


@dataclass
class TeacherConfig:
    kind: TeacherKind = "pixels"
    path: str | None = None  # ov_encoder / tower: weights folder or hub id; npy: the .npy file
    tower: str = "siglip2"  # tower: its name in llava_ov.model.towers
    keys: str | None = None  # npy: one sample key per line, in row order
    frames: int = 8  # video frames sampled uniformly (per-frame embeddings concatenated in order)
    input_size: int = 112  # frame side the teacher sees (ov_encoder: a multiple of its patch size)
    pool: int = 4  # pixels: pooled grid side per frame
    centre: bool = False  # pixels, videos: subtract the clip's mean frame (what moves, not what stays)
    bins: int = 8  # motion: direction bins of the histogram
    segments: int = 4  # motion: time segments (one histogram each, in time order)
    batch_size: int = 16  # samples per teacher forward
    device: str = "auto"

    @property
    def name(self) -> str:
        """How the bank records its teacher: pixels / pixels-centred / KIND:[TOWER:]PATH."""
        if self.kind == "pixels":
            return "pixels-centred" if self.centre else "pixels"
        if self.kind == "motion":
            return f"motion-{self.segments}x{self.bins}"
        return f"{self.kind}:{self.tower + ':' if self.kind == 'tower' else ''}{self.path}"

    def validate(self) -> None:
        check_choices(self, "teacher.")
        if self.kind in ("ov_encoder", "tower", "npy") and not self.path:
            raise ConfigError(f"teacher.kind={self.kind} needs teacher.path")
        if self.kind == "npy" and not self.keys:
            raise ConfigError("teacher.kind=npy needs teacher.keys (the sample keys of the rows)")
        if min(self.frames, self.input_size, self.pool, self.batch_size, self.bins, self.segments) < 1:
            raise ConfigError("teacher: frames, input_size, pool, batch_size, bins and segments must be >= 1")
        if self.kind == "motion" and self.frames < self.segments + 1:
            raise ConfigError(
                f"teacher.kind=motion: {self.frames} frames give {self.frames - 1} motion steps, "
                f"fewer than segments={self.segments}"
            )


@dataclass
class FeatureStats:
    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _media_field(raw: dict) -> str | None:
    for name in sorted(raw):
        ext = name.rsplit(".", 1)[-1].lower()
        if ext in VIDEO_EXTS or ext in IMAGE_EXTS:
            return name
    return None


def decode_frames(name: str, data: bytes, frames: int, size: int) -> np.ndarray:
    """uint8 [F, size, size, 3]: F uniformly sampled frames of a video, or the image (F = 1)."""
    ext = name.rsplit(".", 1)[-1].lower()
    if ext in IMAGE_EXTS:
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BICUBIC)
        return np.asarray(img)[None]
    return decode_video_bytes(
        ext, data, DecodeConfig(num_frames=frames, input_size=size, motion="none")
    ).frames


def decode_video_bytes(ext: str, data: bytes, cfg: DecodeConfig) -> DecodedClip:
    """A shard member's video bytes decoded (through a temporary file with the member's suffix)."""
    with tempfile.NamedTemporaryFile(suffix=f".{ext}") as f:
        f.write(data)
        f.flush()
        return decode_clip(f.name, cfg)


def motion_histograms(name: str, data: bytes, frames: int, size: int, bins: int) -> np.ndarray:
    """float32 [F - 1, bins]: per sampled frame after the first, the magnitude of its motion field
    summed per direction of movement (the negated (dx, dy) of the field, which points back to where the
    content came from); bin b covers angles [-pi + 2 pi b / bins, ...) with image y pointing down (8 bins:
    left = 0, up = 2, right = 4, down = 6)."""
    ext = name.rsplit(".", 1)[-1].lower()
    if ext not in VIDEO_EXTS:
        raise ConfigError("the motion teacher needs videos: build one bank per data kind (images apart)")
    motion = decode_video_bytes(
        ext, data, DecodeConfig(num_frames=frames, input_size=size, motion="auto")
    ).motion
    mv = -motion[1:].astype(np.float32).reshape(len(motion) - 1, -1, 2)  # frame 0 has no reference
    mag = np.linalg.norm(mv, axis=-1)
    idx = (((np.arctan2(mv[..., 1], mv[..., 0]) + np.pi) / (2 * np.pi) * bins).astype(np.int64)) % bins
    out = np.zeros((len(mv), bins), np.float32)
    np.add.at(out, (np.arange(len(mv))[:, None].repeat(idx.shape[1], 1), idx), mag)
    return out


def iter_frames(
    shards: str | Sequence[str], cfg: TeacherConfig, stats: FeatureStats
) -> Iterator[tuple[str, np.ndarray]]:
    """(key, frames) of every decodable sample of the shards, in shard order (one pass)."""
    for raw in iter_raw_samples(shards, ReadConfig()):
        if isinstance(raw, Skipped):
            stats.skipped[raw.reason] = stats.skipped.get(raw.reason, 0) + 1
            continue
        name = _media_field(raw)
        if name is None:
            stats.skipped["no_media"] = stats.skipped.get("no_media", 0) + 1
            continue
        try:
            if cfg.kind == "motion":
                frames = motion_histograms(name, raw[name], cfg.frames, cfg.input_size, cfg.bins)
            else:
                frames = decode_frames(name, raw[name], cfg.frames, cfg.input_size)
        except Exception as e:  # noqa: BLE001 - one bad sample is counted, the stream goes on
            logger.warning("skipped %s: %s", raw.get("__key__"), e)
            stats.skipped["decode_error"] = stats.skipped.get("decode_error", 0) + 1
            continue
        stats.used += 1
        yield str(raw["__key__"]), frames


class Teacher:
    """frames uint8 [F, H, W, 3] of B samples → float32 [B, F · d] (concatenated per-frame embeddings)."""

    def __init__(self, cfg: TeacherConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(
            "cuda"
            if cfg.device == "auto" and torch.cuda.is_available()
            else ("cpu" if cfg.device == "auto" else cfg.device)
        )
        self.model = self.tower = None
        if cfg.kind == "tower":
            self.tower = (
                build_tower(TowerConfig(name=cfg.tower, path=cfg.path, output_layer=-1))
                .to(self.device)
                .eval()
            )
            unit = self.tower.spec.unit()
            if cfg.input_size % unit:
                raise ConfigError(
                    f"teacher.input_size {cfg.input_size} is not a multiple of {unit} (tower {cfg.tower})"
                )
        if cfg.kind == "ov_encoder":
            self.model = OVEncoder.from_pretrained(cfg.path, device=self.device).eval()
            if self.model.head is None:
                raise ConfigError(f"teacher {cfg.path} has no pooling head (use_head=false)")
            if cfg.input_size % self.model.config.patch_size:
                raise ConfigError(
                    f"teacher.input_size {cfg.input_size} is not a multiple of patch "
                    f"{self.model.config.patch_size}"
                )

    @torch.no_grad()
    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        counts = [len(c) for c in clips]
        if len(set(counts)) > 1:
            raise ConfigError(
                f"samples with different frame counts ({sorted(set(counts))}) cannot share a bank: "
                "build one bank per data kind (images and videos apart)"
            )
        if self.cfg.kind == "motion":
            return np.stack([self.motion_embedding(c) for c in clips])
        x = torch.from_numpy(np.concatenate(clips)).to(self.device)  # [sum F, H, W, 3]
        if self.tower is not None:
            emb = self.tower_frames(np.concatenate(clips))
        elif self.model is None:
            pooled = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2).float() / 255.0 - 0.5, self.cfg.pool)
            if self.cfg.centre and counts[0] > 1:
                pooled = pooled.view(len(clips), counts[0], *pooled.shape[1:])
                pooled = (pooled - pooled.mean(1, keepdim=True)).flatten(0, 1)
            emb = pooled.flatten(1)
        else:
            emb = self.model.forward_images(x.permute(0, 3, 1, 2).contiguous(), validate=False).pooled.float()
        return emb.reshape(len(clips), -1).cpu().numpy().astype(np.float32)

    def motion_embedding(self, hist: np.ndarray) -> np.ndarray:
        """[F - 1, bins] per-frame histograms → [segments · bins + 1]: summed per time segment,
        divided by the clip's total motion; the last value is 1 for a clip without motion (0 otherwise),
        so still clips form their own concept instead of a zero vector."""
        seg = np.array_split(np.arange(len(hist)), self.cfg.segments)
        per = np.stack([hist[i].sum(0) for i in seg])
        total = float(per.sum())
        still = 1.0 if total < 1e-6 else 0.0
        return np.concatenate([per.ravel() / max(total, 1e-6), [still]]).astype(np.float32)

    def tower_frames(self, frames: np.ndarray) -> torch.Tensor:
        """[F, H, W, 3] frames, each as an image → [F, d]: the mean of the tower's output tokens."""

        spec = self.tower.spec
        codec = CodecConfig(mode="image", patch_size=spec.patch_size)
        sels = [patchify_image(Image.fromarray(f), codec)[0] for f in frames]
        counter = spec.token_counter()
        out = self.tower(pack_media(sels, ["image"] * len(sels), [counter(s) for s in sels], spec.patch_size))
        return torch.stack([t.float().mean(0) for t in out.features.split(out.counts)])


def embedding_stream(
    shards: str | Sequence[str], cfg: TeacherConfig, stats: FeatureStats | None = None, block: int = 256
):
    """A re-readable stream of (keys, float32 embeddings) blocks for
    :func:`encoder.pretrain.bank.build_bank`."""
    cfg.validate()
    if cfg.kind == "npy":
        return npy_stream(cfg.path, cfg.keys, block)
    teacher = Teacher(cfg)

    def stream() -> Iterator[tuple[list[str], np.ndarray]]:
        local = FeatureStats()
        keys, clips, out_keys, out = [], [], [], []
        for key, frames in iter_frames(shards, cfg, local):
            keys.append(key)
            clips.append(frames)
            if len(clips) == cfg.batch_size:
                out_keys += keys
                out.append(teacher(clips))
                keys, clips = [], []
            if len(out_keys) >= block:
                yield out_keys, np.concatenate(out)
                out_keys, out = [], []
        if clips:
            out_keys += keys
            out.append(teacher(clips))
        if out_keys:
            yield out_keys, np.concatenate(out)
        if stats is not None:
            stats.used, stats.skipped = local.used, local.skipped

    return stream


def spill(stream, folder: str | Path, progress: bool = True):
    """Run ``stream`` once, writing each block to ``folder`` (float16 .npy + keys), and return a stream
    that re-reads those files: the teacher runs once although k-means reads the data twice."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    bar = tqdm(desc="teacher embeddings", unit="sample", disable=not progress)
    for i, (keys, x) in enumerate(stream()):
        f = folder / f"block_{i:06d}.npy"
        np.save(f, x.astype(np.float16))
        f.with_suffix(".keys").write_text("".join(k + "\n" for k in keys))
        files.append(f)
        bar.update(len(keys))
    bar.close()

    def reread() -> Iterator[tuple[list[str], np.ndarray]]:
        for f in files:
            yield f.with_suffix(".keys").read_text().splitlines(), np.load(f).astype(np.float32)

    return reread


def npy_stream(path: str | Path, keys_path: str | Path, block: int = 65536):
    x = np.load(path, mmap_mode="r")
    keys = Path(keys_path).read_text().splitlines()
    if len(keys) != len(x):
        raise ConfigError(f"{keys_path} has {len(keys)} keys but {path} has {len(x)} rows")

    def stream() -> Iterator[tuple[list[str], np.ndarray]]:
        for i in range(0, len(x), block):
            yield (
                keys[i : i + block],
                np.asarray(x[i : i + block], dtype=np.float32).reshape(min(block, len(x) - i), -1),
            )

    return stream


__all__ = [
    "TEACHERS",
    "FeatureStats",
    "Teacher",
    "TeacherConfig",
    "decode_frames",
    "embedding_stream",
    "iter_frames",
    "motion_histograms",
    "npy_stream",
    "spill",
]
