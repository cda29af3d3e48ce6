"""Re-encode videos to a canonical form for codec patchification.

Canonical: H.264 (motion vectors readable from the bitstream) or HEVC, fixed GOP, no B-frames, one
reference frame, no scene-cut keyframes, yuv420p, rotation applied to the pixels, video stream only.
With one reference and no B-frames every P-frame's motion vectors point at the previous decoded frame,
which is exactly the reference the selection signals describe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from encoder.codec.convert import display_rotation_cw
from encoder.codec.errors import VideoDecodeError
from encoder.typed_config import ConfigError, check_choices

ENCODERS = {"h264": ("libx264", "x264-params"), "hevc": ("libx265", "x265-params")}


@dataclass
class TranscodeConfig:
    codec: Literal["h264", "hevc"] = "h264"  # a key of ENCODERS
    gop: int = 16
    crf: int = 23
    preset: str = "veryfast"
    max_side: int | None = None  # downscale so the longer side is at most this (even sizes kept)
    pix_fmt: str = "yuv420p"

    def validate(self) -> None:
        check_choices(self)
        if self.gop < 1:
            raise ConfigError(f"gop must be >= 1, got {self.gop}")


def encoder_options(
    codec: str,
    *,
    gop: int,
    bframes: int = 0,
    refs: int = 1,
    crf: float | None = None,
    preset: str | None = None,
    reproducible: bool = False,
) -> dict[str, str]:
    """libx264 / libx265 options for a fixed GOP: no scene-cut keyframes, ``bframes`` B-frames, ``refs``
    references. ``reproducible`` pins the encoder to one thread (and, for x264, turns macroblock-tree rate
    control off) so the output is byte-identical."""
    if codec not in ENCODERS:
        raise ValueError(f"codec must be one of {sorted(ENCODERS)}, got {codec!r}")
    params = [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0", f"bframes={bframes}", f"ref={refs}"]
    opts: dict[str, str] = {}
    if codec == "hevc":
        params.append("log-level=none")
        if reproducible:
            params += ["frame-threads=1", "pools=none"]
        if crf is not None:
            params.append(f"crf={crf}")
    else:
        if reproducible:  # x264's macroblock-tree rate control changed ~1 in 20 encodes of the same
            opts["threads"] = "1"  # short clip (measured: 37 of 800, 5 distinct outputs); without it, 0
            params.append("mbtree=0")
        if crf is not None:
            opts["crf"] = str(crf)
    opts[ENCODERS[codec][1]] = ":".join(params)
    if preset is not None:
        opts["preset"] = preset
    return opts


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return _even(width * scale), _even(height * scale)


@dataclass
class TranscodeResult:
    src: str
    dst: str
    frames: int
    seconds: float
    bytes_in: int
    bytes_out: int


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """RGB pixels of ``frame`` as displayed (its display-matrix rotation applied)."""
    rgb = frame.to_ndarray(format="rgb24")
    k = (-display_rotation_cw(frame) // 90) % 4  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def transcode(src: str | Path, dst: str | Path, cfg: TranscodeConfig | None = None) -> TranscodeResult:
    """Re-encode ``src`` into ``dst`` (.mp4); raises :class:`VideoDecodeError` on unreadable input."""
    cfg = cfg or TranscodeConfig()
    cfg.validate()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise VideoDecodeError(src, "file not found")
    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part.mp4")
    frames = 0
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise VideoDecodeError(src, "no video stream")
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            with av.open(str(tmp), "w", format="mp4") as out:
                vout = None
                for frame in inp.decode(vin):
                    rgb = _upright(frame)
                    if vout is None:
                        vout = _open_output(out, cfg, rate, rgb.shape[1], rgb.shape[0])
                    img = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    img = img.reformat(width=vout.width, height=vout.height, format=cfg.pix_fmt)
                    img.pts = frames
                    out.mux(vout.encode(img))
                    frames += 1
                if vout is None:
                    raise VideoDecodeError(src, "no decodable video frame")
                out.mux(vout.encode(None))
    except VideoDecodeError:
        tmp.unlink(missing_ok=True)
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise VideoDecodeError(src, f"transcode failed after {frames} frames ({e})") from None
    tmp.replace(dst)
    return TranscodeResult(
        str(src), str(dst), frames, time.perf_counter() - t0, src.stat().st_size, dst.stat().st_size
    )


def _open_output(out, cfg: TranscodeConfig, rate: Fraction, width: int, height: int):
    opts = encoder_options(cfg.codec, gop=cfg.gop, crf=cfg.crf, preset=cfg.preset)
    stream = out.add_stream(ENCODERS[cfg.codec][0], rate=rate, options=opts)
    stream.width, stream.height = output_size(width, height, cfg.max_side)
    stream.pix_fmt = cfg.pix_fmt
    stream.time_base = Fraction(1) / rate
    return stream
