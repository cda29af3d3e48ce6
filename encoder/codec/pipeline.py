"""Codec patchification: any video or image → one :class:`PatchSelection`.

Modes (``CodecConfig.mode``):
- ``codec``   decode T frames (64), score patches from motion + residual, keep a dense context frame
              and the most informative patches up to the budget K.
- ``random``  the intervention control of ``codec``: the same decode, the same context frame and the
              same number of patches as ``codec`` would keep, the others drawn uniformly from frames
              1..T-1 (seeded by ``select.seed`` and the clip's first frame: the same clip gives the
              same draw).
- ``frames``  uniform frame sampling: ``num_frames`` frames (8), every patch, t on the 64-frame grid.
- ``collage`` ``num_frames`` frames stacked into one tall image (t = 0, h runs over the whole stack).
- ``image``   a still image at native resolution rounded to multiples of the patch size (t = 0), or with
              ``image_max_cells`` at its aspect under a cell budget.
The dense modes take ``decode.aspect="native"``: frames keep the source aspect at most
``decode.max_cells`` cells of ``decode.cell`` pixels (the frame-based towers' budget rule).
"""

from __future__ import annotations

import dataclasses
import tempfile
import typing
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from encoder.codec.decode import DecodeConfig, DecodedClip, decode_clip
from encoder.codec.errors import VideoDecodeError
from encoder.codec.saliency import SaliencyConfig, energies, is_static, patch_scores, saliency_from_energies
from encoder.codec.select import SelectConfig, random_patches, select_patches
from encoder.codec.sizing import native_size
from encoder.codec.synthetic import write_video
from encoder.codec.types import PatchSelection, virtual_t
from encoder.typed_config import ConfigError, check_choices

Mode = Literal["codec", "random", "frames", "collage", "image"]
MODES: tuple[str, ...] = typing.get_args(Mode)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {
    ".mp4",
    ".mkv",
    ".mov",
    ".avi",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
}


def media_files(path: str | Path, images: bool = True) -> list[Path]:
    """A file as given, or a folder's video (and, with ``images``, image) files, recursively, sorted;
    FileNotFoundError for a path that does not exist."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(2, "No such file or folder", str(path))
    suffixes = VIDEO_SUFFIXES | (IMAGE_SUFFIXES if images else set())
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


@dataclass
class CodecConfig:
    mode: Mode = "codec"
    patch_size: Literal[14, 16] = 14
    num_frames: int = 8  # frames for the ``frames`` and ``collage`` modes
    image_max_side: int | None = None  # ``image`` mode: downscale larger images to this side first
    image_max_cells: int | None = None  # ``image`` mode: native aspect, at most this many image_cell squares
    image_cell: int | None = None  # pixels per cell side (None: the patch size)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    select: SelectConfig = field(default_factory=SelectConfig)

    def validate(self) -> None:
        """The choices of every section, then the rules between fields (ConfigError)."""
        check_choices(self)
        if (
            self.mode != "image"
            and self.decode.input_size % self.patch_size
            and self.decode.aspect != "native"
        ):
            raise ConfigError(
                f"input_size {self.decode.input_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.decode.aspect == "native" and self.mode in ("codec", "random"):
            raise ConfigError(
                f"aspect 'native' is for the dense modes; {self.mode!r} selects on the square grid"
            )
        if self.decode.aspect == "native" and self.decode.cell % self.patch_size:
            raise ConfigError(
                f"decode.cell {self.decode.cell} is not a multiple of patch_size {self.patch_size}"
            )
        if self.image_max_cells is not None and self.image_max_cells < 1:
            raise ConfigError(f"image_max_cells must be >= 1, got {self.image_max_cells}")
        if self.image_cell is not None and self.image_cell % self.patch_size:
            raise ConfigError(
                f"image_cell {self.image_cell} is not a multiple of patch_size {self.patch_size}"
            )


@dataclass
class Canvas:
    """The frames the patches were cut from (for pictures): ``frames[i]`` holds t = ``frame_t[i]``."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    frame_t: np.ndarray  # int32 [F]


def patchify(path: str | Path, cfg: CodecConfig | None = None) -> PatchSelection:
    """Turn one media file into a :class:`PatchSelection` (raises :class:`VideoDecodeError`).

    Files with an image suffix always use the ``image`` mode.
    """
    return patchify_with_canvas(path, cfg)[0]


_IMAGE_FIELDS = ("image_max_side", "image_max_cells", "image_cell")  # read by the image path only
# CodecConfig fields a video's selection never reads, per mode (the dispatch of patchify_with_canvas):
# the image settings always, and the dense modes' frame count in the codec / random modes.
_UNUSED_FOR_VIDEO = {
    "codec": ("num_frames", *_IMAGE_FIELDS),
    "random": ("num_frames", *_IMAGE_FIELDS),
    "frames": _IMAGE_FIELDS,
    "collage": _IMAGE_FIELDS,
}


def video_settings(cfg: CodecConfig) -> dict:
    """The fields of ``cfg`` that shape the selection of a video (a key for cached video selections:
    settings that differ only elsewhere give the same patches)."""
    settings = dataclasses.asdict(cfg)
    for k in _UNUSED_FOR_VIDEO.get(cfg.mode, ()):
        settings.pop(k)
    return settings


def patchify_with_canvas(path: str | Path, cfg: CodecConfig | None = None) -> tuple[PatchSelection, Canvas]:
    """:func:`patchify`, also returning the frames the patches came from."""
    cfg = cfg or CodecConfig()
    cfg.validate()
    if cfg.mode == "image" or Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return patchify_image(path, cfg)
    if cfg.mode in ("codec", "random"):
        clip = decode_clip(path, cfg.decode)
        sel = _from_codec(clip, cfg)
        return sel, Canvas(clip.frames, sel.frame_t)
    clip = decode_clip(path, dataclasses.replace(cfg.decode, num_frames=cfg.num_frames, motion="none"))
    if cfg.mode == "frames":
        sel = _from_frames(clip, cfg)
        return sel, Canvas(clip.frames, sel.frame_t)
    return _from_collage(clip, cfg), Canvas(_stack_tall(clip.frames), np.zeros(1, np.int32))


def patch_grid(frames: np.ndarray, patch: int) -> np.ndarray:
    """uint8 [T, H, W, 3] → [T, H/p, W/p, 3, p, p] (a view-friendly reshape, no copy of patches)."""
    t, h, w, c = frames.shape
    if h % patch or w % patch:
        raise ValueError(f"frame size {h}x{w} is not a multiple of patch {patch}")
    return frames.reshape(t, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 5, 2, 4)


def _clip_meta(clip: DecodedClip, mode: str, cfg: CodecConfig) -> dict:
    return {
        "path": str(clip.path),
        "mode": mode,
        "codec": clip.codec,
        "fps": float(clip.fps),
        "num_frames_total": int(clip.num_frames_total),
        "orig_size": list(clip.orig_size),
        "rotation": int(clip.rotation),
        "input_size": cfg.decode.input_size,
        "aspect": cfg.decode.aspect,
        "timestamps": [round(float(t), 6) for t in clip.timestamps],
        "pict_types": list(clip.pict_types),
        "motion_source": list(clip.motion_source),
    }


def _from_codec(clip: DecodedClip, cfg: CodecConfig) -> PatchSelection:
    p = cfg.patch_size
    mv, res = energies(clip.motion, clip.residual, cfg.saliency)
    static = is_static(mv, res, cfg.saliency)
    scores = grid_scores(saliency_from_energies(mv, res, cfg.saliency), cfg.decode.input_size // p)
    sel = select_patches(
        scores,
        cfg.select,
        pict_types=clip.pict_types,
        packet_sizes=clip.packet_sizes,
        frame_ids=clip.frame_ids,
        static=static,
    )
    if cfg.mode == "random":
        seed = zlib.crc32(np.ascontiguousarray(clip.frames[0]).tobytes())
        sel = random_patches(sel, scores, np.random.default_rng([cfg.select.seed, seed]))
    frame_t = virtual_t(len(clip))
    grid = patch_grid(clip.frames, p)
    meta = _clip_meta(clip, cfg.mode, cfg) | {
        "budget": len(sel.frame_index),
        "budget_requested": cfg.select.budget,
        "budget_capped": bool(sel.capped),  # the clip has fewer patches than the budget: all of them
        "select_mode": cfg.select.mode,
        "context": cfg.select.context,
        "static_fallback": bool(sel.fallback),
        "context_patches": int(sel.is_context.sum()),
    }
    if sel.groups is not None:
        meta["groups"] = [int(g) for g in sel.groups]
    return PatchSelection(
        positions=np.stack([frame_t[sel.frame_index], sel.row, sel.col], axis=1),
        pixels=np.ascontiguousarray(grid[sel.frame_index, sel.row, sel.col]),
        scores=sel.score,
        frame_ids=clip.frame_ids,
        frame_t=frame_t,
        patch_size=p,
        grid_hw=grid.shape[1:3],
        meta=meta,
    )


def grid_scores(saliency: np.ndarray, grid: int) -> np.ndarray:
    """float32 [T, grid, grid]: each patch's saliency summed over its footprint on the [T, A, A] maps;
    exact sums when A is a multiple of the grid, area-weighted pooling (the same sum, interpolated)
    otherwise."""
    a = saliency.shape[-1]
    if a % grid == 0:
        return patch_scores(saliency, a // grid)
    x = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[:, None]
    return F.adaptive_avg_pool2d(x, grid)[:, 0].numpy() * np.float32((a / grid) ** 2)


def _all_patches(frames: np.ndarray, t_of_frame: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    grid = patch_grid(frames, p)
    t, gh, gw = grid.shape[:3]
    tt, hh, ww = np.meshgrid(t_of_frame, np.arange(gh), np.arange(gw), indexing="ij")
    positions = np.stack([tt.ravel(), hh.ravel(), ww.ravel()], axis=1)
    return positions, np.ascontiguousarray(grid.reshape(t * gh * gw, 3, p, p))


def _from_frames(clip: DecodedClip, cfg: CodecConfig) -> PatchSelection:
    frame_t = virtual_t(len(clip))
    positions, pixels = _all_patches(clip.frames, frame_t, cfg.patch_size)
    return PatchSelection(
        positions=positions,
        pixels=pixels,
        scores=np.ones(len(positions), np.float32),
        frame_ids=clip.frame_ids,
        frame_t=frame_t,
        patch_size=cfg.patch_size,
        grid_hw=(clip.frames.shape[1] // cfg.patch_size, clip.frames.shape[2] // cfg.patch_size),
        meta=_clip_meta(clip, "frames", cfg),
    )


def _from_collage(clip: DecodedClip, cfg: CodecConfig) -> PatchSelection:
    tall = _stack_tall(clip.frames)
    positions, pixels = _all_patches(tall, np.zeros(1, np.int32), cfg.patch_size)
    return PatchSelection(
        positions=positions,
        pixels=pixels,
        scores=np.ones(len(positions), np.float32),
        frame_ids=clip.frame_ids,
        frame_t=np.zeros(len(clip), np.int32),
        patch_size=cfg.patch_size,
        grid_hw=(tall.shape[1] // cfg.patch_size, tall.shape[2] // cfg.patch_size),
        meta=_clip_meta(clip, "collage", cfg),
    )


def _stack_tall(frames: np.ndarray) -> np.ndarray:
    """[T, S, S, 3] → [1, T*S, S, 3]: frames stacked top to bottom."""
    return frames.reshape(1, -1, *frames.shape[2:])


def _round_to_patch(n: int, p: int) -> int:
    return max(p, int(round(n / p)) * p)


def load_image(
    source: str | Path | Any, max_side: int | None = None, patch: int = 14, fit: tuple[int, int] | None = None
) -> np.ndarray:
    """RGB uint8 [H, W, 3] with EXIF orientation applied, resized to multiples of ``patch``; with
    ``fit`` = (max_cells, cell), to the largest aspect-kept grid of at most max_cells cell-pixel squares
    (after ``max_side``). ``source``: an image file or an in-memory ``PIL.Image``."""
    if isinstance(source, Image.Image):
        im = ImageOps.exif_transpose(source).convert("RGB")
    else:
        path = Path(source)
        if not path.is_file():
            raise VideoDecodeError(path, "file not found")
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise VideoDecodeError(path, f"not a readable image ({e})") from None
    w, h = im.size
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    if fit is not None:
        h, w = native_size(h, w, *fit)
        size = (w, h)
    else:
        size = (_round_to_patch(w, patch), _round_to_patch(h, patch))
    if size != im.size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def patchify_image(source: str | Path | Any, cfg: CodecConfig | None = None) -> tuple[PatchSelection, Canvas]:
    """A still image (file or ``PIL.Image``): every patch at (native) resolution, t = 0."""
    cfg = cfg or CodecConfig(mode="image")
    p = cfg.patch_size
    fit = (cfg.image_max_cells, cfg.image_cell or p) if cfg.image_max_cells else None
    img = load_image(source, cfg.image_max_side, p, fit)
    positions, pixels = _all_patches(img[None], np.zeros(1, np.int32), p)
    name = str(source) if isinstance(source, (str, Path)) else "<image>"
    sel = PatchSelection(
        positions=positions,
        pixels=pixels,
        scores=np.ones(len(positions), np.float32),
        frame_ids=np.zeros(1, np.int64),
        frame_t=np.zeros(1, np.int32),
        patch_size=p,
        grid_hw=(img.shape[0] // p, img.shape[1] // p),
        meta={"path": name, "mode": "image", "size": [int(img.shape[0]), int(img.shape[1])]},
    )
    return sel, Canvas(img[None], np.zeros(1, np.int32))


def patchify_frames(
    frames: Sequence[Any], cfg: CodecConfig | None = None, fps: float = 8.0
) -> PatchSelection:
    """A clip given as decoded frames (``PIL.Image`` s or RGB uint8 arrays, e.g. what a benchmark hands
    over instead of a file): encoded losslessly-close to a temporary H.264 file (all frames resized to
    the first one's size, ``fps`` frames per second) and patchified as a video with ``cfg``, so the
    codec mode reads real motion vectors and residuals from it. Raises :class:`VideoDecodeError` on an
    empty list."""
    if len(frames) == 0:
        raise VideoDecodeError("<frames>", "empty frame list")
    arrays = [
        np.asarray(f.convert("RGB") if isinstance(f, Image.Image) else f, dtype=np.uint8) for f in frames
    ]
    h, w = arrays[0].shape[:2]
    h, w = h - h % 2, w - w % 2  # 4:2:0 needs even sizes
    if h < 2 or w < 2:
        raise VideoDecodeError("<frames>", f"frames of {arrays[0].shape[:2]} pixels are too small")
    clip = np.stack(
        [
            np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))
            if a.shape[:2] != (h, w)
            else a
            for a in arrays
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.mp4"
        write_video(path, clip, codec="h264", fps=fps, gop=max(1, len(clip)), crf=12)
        return patchify(path, cfg)
