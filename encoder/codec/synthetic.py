"""Deterministic synthetic videos with known motion, written through PyAV.

Used by the codec tests, the demo, benchmarks and a synthetic training set. Every clip has a strongly
textured background (so encoders and block matchers see structure) and, depending on the scene, one
independently moving object whose per-frame bounding box and displacement are returned.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from encoder.codec.transcode import ENCODERS, encoder_options

_ENCODERS = {"h264": "libx264", "hevc": "libx265", "mpeg4": "mpeg4"}
_SCENES = ("mover", "pan_mover", "static", "blink", "handheld")
_TIME_BASE = Fraction(1, 6000)  # fits MPEG-4 part 2 (16-bit), exact for 24/25/30/50/60 fps


@dataclass
class SyntheticClip:
    """A written synthetic clip and its ground truth (all in original pixels)."""

    path: str
    boxes: np.ndarray  # int64 [N, 4] (x0, y0, x1, y1), x1/y1 exclusive; -1 rows where the object is absent
    velocity: np.ndarray  # float32 [N, 2] object displacement (dx, dy) since the previous frame
    bg_velocity: np.ndarray  # float32 [N, 2] background content displacement since the previous frame
    scene: str
    codec: str
    width: int
    height: int
    num_frames: int
    fps: float


def _codec_options(codec: str, gop: int, bframes: int, crf: float | None) -> dict[str, str]:
    """Encoder options for reproducible output with a fixed GOP and B-frame count."""
    if codec == "mpeg4":
        return {"threads": "1"}
    if codec not in ENCODERS:
        raise ValueError(f"unsupported codec {codec!r}; expected one of {sorted(_ENCODERS)}")
    return encoder_options(codec, gop=gop, bframes=bframes, crf=crf, reproducible=True)


def _rotation_matrix(rotation: int, width: int, height: int) -> bytes:
    """ISO-BMFF tkhd matrix (big-endian, 16.16 / 2.30) that displays the track rotated clockwise."""
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[rotation]
    tx = {0: 0, 90: height, 180: width, 270: 0}[rotation]
    ty = {0: 0, 90: 0, 180: height, 270: width}[rotation]
    vals = [cos << 16, sin << 16, 0, -sin << 16, cos << 16, 0, tx << 16, ty << 16, 1 << 30]
    return struct.pack(">9i", *vals)


def _set_mp4_rotation(path: str, rotation: int, width: int, height: int) -> None:
    """Patch the display matrix of the (single) video track header of an MP4/MOV file in place."""
    data = bytearray(Path(path).read_bytes())
    pos = data.find(b"tkhd")
    if pos < 4:
        raise ValueError(f"{path}: no tkhd box to carry the rotation")
    version = data[pos + 4]
    # after type: version/flags(4), times+track id+reserved+duration (20 or 32), reserved(8),
    # layer(2), alternate group(2), volume(2), reserved(2) -> matrix(36)
    start = pos + 4 + 4 + (32 if version == 1 else 20) + 16
    data[start : start + 36] = _rotation_matrix(rotation, width, height)
    Path(path).write_bytes(bytes(data))


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    codec: str = "h264",
    fps: float = 25,
    gop: int = 16,
    bframes: int = 0,
    pix_fmt: str = "yuv420p",
    crf: float | None = None,
    rotation: int = 0,
    timestamps: np.ndarray | None = None,
) -> None:
    """Encode RGB frames [N, H, W, 3] uint8 to `path` (container from the extension).

    codec: "h264" (libx264), "hevc" (libx265) or "mpeg4"; fixed GOP, no scene cuts, one reference, so
    output is reproducible. rotation (0/90/180/270, clockwise display rotation like the legacy `rotate`
    tag) is written as a tkhd display matrix and needs an .mp4/.mov path. timestamps (seconds, strictly
    increasing) gives variable-frame-rate output. libx264/libx265 cannot code odd sizes in 4:2:0, so
    for odd sizes a yuv420p request is written as yuv444p with those encoders (MPEG-4 keeps 4:2:0).
    """
    import av  # local import: keep module import cheap

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3] uint8, got {frames.shape}")
    rotation = int(rotation) % 360
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    path = os.fspath(path)
    if rotation and Path(path).suffix.lower() not in (".mp4", ".mov", ".m4v"):
        raise ValueError("rotation metadata is only supported for .mp4/.mov outputs")
    n, height, width = frames.shape[:3]
    if codec in ("h264", "hevc") and pix_fmt == "yuv420p" and (width % 2 or height % 2):
        pix_fmt = "yuv444p"
    if timestamps is None:
        pts = np.round(np.arange(n) / float(fps) / float(_TIME_BASE)).astype(np.int64)
    else:
        pts = np.round(np.asarray(timestamps, dtype=np.float64) / float(_TIME_BASE)).astype(np.int64)
        if len(pts) != n or np.any(np.diff(pts) <= 0):
            raise ValueError("timestamps must be strictly increasing, one per frame")
    with av.open(path, "w") as container:
        stream = container.add_stream(_ENCODERS.get(codec, codec), rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = _TIME_BASE
        stream.options = _codec_options(codec, gop, bframes, crf)
        if codec == "mpeg4":
            stream.codec_context.gop_size = gop
            stream.codec_context.max_b_frames = bframes
        for img, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(p), _TIME_BASE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    if rotation:
        _set_mp4_rotation(path, rotation, width, height)


def _texture(rng: np.random.Generator, height: int, width: int, cell: int = 4) -> np.ndarray:
    """Blocky colour noise plus fine noise and a faint checker: aperiodic, strongly structured."""
    coarse = rng.integers(30, 226, size=(-(-height // cell), -(-width // cell), 3))
    img = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:height, :width].astype(np.int16)
    img += rng.integers(-12, 13, size=img.shape).astype(np.int16)
    yy, xx = np.mgrid[:height, :width]
    img += (((yy // 16 + xx // 16) % 2) * 24 - 12)[..., None].astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _object(rng: np.random.Generator, size: int) -> np.ndarray:
    """Saturated red/blue/yellow patchwork with a dark frame, distinct from the background."""
    palette = np.array([[230, 30, 30], [30, 60, 230], [240, 220, 30], [250, 250, 250]], dtype=np.uint8)
    idx = rng.integers(0, len(palette), size=(-(-size // 3), -(-size // 3)))
    obj = np.repeat(np.repeat(palette[idx], 3, axis=0), 3, axis=1)[:size, :size].copy()
    obj[:2], obj[-2:], obj[:, :2], obj[:, -2:] = 0, 0, 0, 0
    return obj


def _pingpong(start: int, step: int, hi: int, n: int) -> np.ndarray:
    """Integer positions in [0, hi] moving by `step` per frame and bouncing at the ends."""
    if hi <= 0:
        return np.zeros(n, dtype=np.int64)
    period = 2 * hi
    raw = (start + step * np.arange(n)) % period
    return np.where(raw <= hi, raw, period - raw).astype(np.int64)


def render_scene(
    scene: str, width: int, height: int, num_frames: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render a scene to frames [N, H, W, 3] uint8 plus boxes, object and background velocities."""
    if scene not in _SCENES:
        raise ValueError(f"unknown scene {scene!r}; expected one of {_SCENES}")
    rng = np.random.default_rng(seed)
    n = num_frames
    if scene == "handheld":
        return _render_handheld(rng, width, height, n)
    pan = scene == "pan_mover"
    margin = max(4, 2 * n) if pan else 0
    margin = min(margin, 64)
    bg = _texture(rng, height + margin, width + margin)
    size = max(8, min(round(0.18 * min(width, height)), min(width, height) - 2))
    obj = _object(rng, size)
    bg_x = _pingpong(0, 2, margin, n) if pan else np.zeros(n, dtype=np.int64)
    bg_y = _pingpong(0, 1, margin, n) if pan else np.zeros(n, dtype=np.int64)
    ox = _pingpong(int(rng.integers(0, max(1, width - size))), 3, width - size, n)
    oy = _pingpong(int(rng.integers(0, max(1, height - size))), 2 if not pan else -2, height - size, n)
    visible = np.ones(n, dtype=bool)
    if scene == "static":
        visible[:] = False
    elif scene == "blink":
        ox[:], oy[:] = (width - size) // 2, (height - size) // 2
        visible[:] = False
        visible[max(0, n // 2 - 2) : n // 2 + 2] = True
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    for i in range(n):
        frames[i] = bg[bg_y[i] : bg_y[i] + height, bg_x[i] : bg_x[i] + width]
        if visible[i]:
            frames[i, oy[i] : oy[i] + size, ox[i] : ox[i] + size] = obj
            boxes[i] = (ox[i], oy[i], ox[i] + size, oy[i] + size)
    velocity = np.zeros((n, 2), dtype=np.float32)
    moving = visible[1:] & visible[:-1]
    velocity[1:] = np.where(moving[:, None], np.stack([np.diff(ox), np.diff(oy)], 1), 0)
    bg_velocity = np.zeros((n, 2), dtype=np.float32)
    bg_velocity[1:] = -np.stack([np.diff(bg_x), np.diff(bg_y)], 1)
    return frames, boxes, velocity, bg_velocity


def _render_handheld(rng: np.random.Generator, width: int, height: int, n: int):
    """A handheld camera over a textured scene — translation, rotation (≤ 4°, ~1° per frame) and zoom
    (≤ 6%, ~1.2% per frame) that change every frame (random walks) — plus an independent mover on top."""
    margin = max(8, round(0.15 * max(width, height)))
    bg = Image.fromarray(_texture(rng, height + 2 * margin, width + 2 * margin))
    size = max(8, min(round(0.18 * min(width, height)), min(width, height) - 2))
    obj = _object(rng, size)
    walk = lambda sd, lim: np.clip(np.cumsum(rng.normal(0, sd, n)), -lim, lim)  # noqa: E731
    angle, zoom = np.deg2rad(walk(1.0, 4.0)), 1.0 + walk(0.012, 0.06)
    tx, ty = walk(1.5, margin / 3), walk(1.5, margin / 3)
    cx, cy = bg.width / 2, bg.height / 2
    ox = _pingpong(int(rng.integers(0, max(1, width - size))), 3, width - size, n)
    oy = _pingpong(int(rng.integers(0, max(1, height - size))), 2, height - size, n)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    for i in range(n):
        # output pixel (u, v) (centred on the frame) samples the scene at R(-a)/z·(u, v) + centre + shift
        c, s_ = np.cos(angle[i]) / zoom[i], np.sin(angle[i]) / zoom[i]
        u0, v0 = width / 2, height / 2
        a, b, d, e = c, s_, -s_, c
        data = (a, b, cx + tx[i] - a * u0 - b * v0, d, e, cy + ty[i] - d * u0 - e * v0)
        frame = np.asarray(bg.transform((width, height), Image.AFFINE, data, resample=Image.BILINEAR))
        frames[i] = frame
        frames[i, oy[i] : oy[i] + size, ox[i] : ox[i] + size] = obj
        boxes[i] = (ox[i], oy[i], ox[i] + size, oy[i] + size)
    velocity = np.zeros((n, 2), dtype=np.float32)
    velocity[1:] = np.stack([np.diff(ox), np.diff(oy)], 1)
    bg_velocity = np.zeros((n, 2), dtype=np.float32)
    bg_velocity[1:] = -np.stack([np.diff(tx), np.diff(ty)], 1)
    return frames, boxes, velocity, bg_velocity


def make_clip(
    path: str | os.PathLike,
    scene: str = "mover",
    *,
    codec: str = "h264",
    width: int = 224,
    height: int = 224,
    num_frames: int = 64,
    fps: float = 25,
    gop: int = 16,
    bframes: int = 0,
    pix_fmt: str = "yuv420p",
    seed: int = 0,
    crf: float | None = None,
    rotation: int = 0,
) -> SyntheticClip:
    """Render `scene` ("mover", "pan_mover", "static", "blink") and encode it to `path`.

    mover: a ~0.18·min(H, W) square patchwork object bouncing at (3, 2) px/frame over a static texture.
    pan_mover: the background pans (content moves by (-2, -1) px/frame, bouncing) while the object moves
    at (3, -2) px/frame. static: nothing moves. blink: the object is shown, static, for 4 frames in the
    middle only. Deterministic for a seed (and reproducible encoder settings).
    """
    frames, boxes, velocity, bg_velocity = render_scene(scene, width, height, num_frames, seed)
    write_video(
        path,
        frames,
        codec=codec,
        fps=fps,
        gop=gop,
        bframes=bframes,
        pix_fmt=pix_fmt,
        crf=crf,
        rotation=rotation,
    )
    return SyntheticClip(
        path=os.fspath(path),
        boxes=boxes,
        velocity=velocity,
        bg_velocity=bg_velocity,
        scene=scene,
        codec=codec,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=float(fps),
    )


def object_patch_overlap(
    clip: SyntheticClip, frame_ids: np.ndarray, input_size: int, patch: int
) -> np.ndarray:
    """float [T, G, G]: the fraction of each patch of the S×S input (``aspect="resize"``) covered by the
    object's box in each given frame (0 where the object is absent). Ground truth for selection tests."""
    g = input_size // patch
    sx, sy = input_size / clip.width, input_size / clip.height
    lo, hi = np.arange(g) * patch, (np.arange(g) + 1) * patch
    boxes = clip.boxes[np.asarray(frame_ids)].astype(np.float64)
    present = boxes[:, 0] >= 0

    def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [T] box edges → [T, G] covered fraction
        return np.clip(np.minimum(hi, b[:, None]) - np.maximum(lo, a[:, None]), 0, None) / patch

    ox = overlap(boxes[:, 0] * sx, boxes[:, 2] * sx)
    oy = overlap(boxes[:, 1] * sy, boxes[:, 3] * sy)
    return np.where(present[:, None, None], oy[:, :, None] * ox[:, None, :], 0.0)
