"""Decode T uniformly sampled frames of a video with codec motion and residual signals (PyAV)."""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from encoder.codec.convert import FrameConverter, display_rotation_cw
from encoder.codec.errors import VideoDecodeError
from encoder.codec.motion import (
    estimate_motion,
    motion_vector_cell,
    rasterize_motion_vectors,
    residual_energy,
    resize_motion_field,
)
from encoder.codec.mp4index import container_index, demux_packets
from encoder.codec.sampling import sample_positions, snap_to_keyframes
from encoder.typed_config import ConfigError, check_choices

Aspect = Literal["resize", "crop", "pad", "native"]  # native: aspect kept, sized by max_cells (dense modes)
Motion = Literal["auto", "bitstream", "estimated", "none"]
Sampling = Literal["uniform", "keyframe", "auto"]
ASPECTS: tuple[str, ...] = typing.get_args(Aspect)
MOTIONS: tuple[str, ...] = typing.get_args(Motion)
SAMPLINGS: tuple[str, ...] = typing.get_args(Sampling)
# FFmpeg decoders that honour flags2=+export_mvs (the mpegvideo family and H.264); HEVC/AV1/VP9 do not.
MV_CODECS = frozenset(
    "h264 mpeg4 mpeg1video mpeg2video h263 h263p flv1 msmpeg4v2 msmpeg4v3 wmv1 wmv2".split()
)
# FFmpeg renders plain text as "video" (tty demuxer / ansi decoder): treat it as not a video.
_TEXT_FORMATS, _TEXT_CODECS = frozenset({"tty"}), frozenset({"ansi"})
PICT_TYPES = {1: "I", 2: "P", 3: "B", 4: "P", 5: "I", 6: "P", 7: "B"}  # AVPictureType: S→P, SI→I, SP→P, BI→B
_CHUNK_PIXELS = 4 * 448 * 448  # pixels per block-matching / residual batch (cache-friendly, bounded memory)


@dataclass
class DecodeConfig:
    """How to sample, resize and analyse a clip (see `decode_clip`)."""

    num_frames: int = 64
    input_size: int = 224
    aspect: Aspect = "resize"
    max_cells: int = 0  # aspect="native": at most this many cell x cell squares per frame (NaFlex's rule)
    cell: int = 14
    start: float | None = None
    end: float | None = None
    threads: int = 0  # decoder threads (0 = FFmpeg's choice); bitstream vectors are always read with one
    motion: Motion = "auto"
    block_size: int = 8
    search_range: int = 7
    pyramid_levels: int = 2  # block matching coarse to fine (1 = exhaustive search at full resolution)
    analysis_size: int = 112  # motion/residual maps at about this side (0 = at the input size)
    seek: bool = True  # jump to the keyframe before each sampled frame instead of decoding the frames between
    # uniform: the frames nearest T evenly spaced instants (exact); keyframe: each moved to the frame after
    # its nearest keyframe (within a quarter of the spacing), so a sample costs two decoded frames however
    # long the video; auto: keyframe when samples are more than two GOPs apart (long videos), else uniform
    sampling: Sampling = "uniform"

    @property
    def stride(self) -> int:
        """Input pixels per analysis pixel: selection only needs per-patch sums, so the signals are
        computed at S / stride ≈ ``analysis_size`` (224 → 112, 448 → 112; inputs below 2×112 as they are)."""
        return max(1, self.input_size // self.analysis_size) if self.analysis_size else 1

    @property
    def signal_size(self) -> int:
        """Side A of the motion and residual maps (block_size and search_range are in its pixels)."""
        return round(self.input_size / self.stride)

    def __post_init__(self) -> None:
        self.validate()  # a bad DecodeConfig(...) fails where it is made

    def validate(self) -> None:
        check_choices(self)
        if self.num_frames < 1 or self.input_size < 1:
            raise ConfigError("num_frames and input_size must be positive")
        if self.aspect == "native" and (self.max_cells < 1 or self.cell < 1):
            raise ConfigError(
                f"aspect 'native' needs max_cells >= 1 and cell >= 1, got {self.max_cells}, {self.cell}"
            )
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ConfigError(f"end ({self.end}) < start ({self.start})")
        if self.analysis_size < 0:
            raise ConfigError(f"analysis_size must be ≥ 0, got {self.analysis_size}")
        if self.block_size < 1 or self.search_range < 0 or self.pyramid_levels < 1:
            raise ConfigError("block_size must be ≥ 1, search_range ≥ 0 and pyramid_levels ≥ 1")


@dataclass
class DecodedClip:
    """T sampled frames at S×S plus per-frame codec signals at A×A, A = ``cfg.signal_size``
    (see `decode_clip`).

    motion[i, y, x] = (dx, dy): pred(x, y) = ref(x + dx, y + dy) with ref the previous decoded frame;
    residual = |Y − pred| on 0..255 BT.601 luma; rotation is in clockwise degrees.
    """

    path: str
    frames: np.ndarray
    frame_ids: np.ndarray
    timestamps: np.ndarray
    pict_types: list[str]
    packet_sizes: np.ndarray
    num_frames_total: int
    fps: float
    codec: str
    orig_size: tuple[int, int]
    rotation: int
    motion: np.ndarray | None
    residual: np.ndarray | None
    motion_source: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class _Index:
    """Result of the demux pass: every frame of the stream in presentation order."""

    pts: np.ndarray  # int64 [N] (or decode-order counters when the stream has no timestamps)
    sizes: np.ndarray  # int64 [N]
    keyframe: np.ndarray  # bool [N]
    times: np.ndarray  # float64 [N] seconds since the first frame
    has_pts: bool
    fwd_dist: np.ndarray  # int64 [N] frames back to the nearest possible past reference (1 if none)
    bwd_dist: np.ndarray  # int64 [N] frames ahead to the nearest possible future reference (1 if none)


@dataclass
class _Sample:
    """One sampled frame as collected during the decode pass."""

    idx: int
    rgb: np.ndarray  # uint8 [S, S, 3]
    pict: str
    luma: np.ndarray | None = None  # uint8 [S, S] full-range BT.601 luma (swscale "gray")
    ref_luma: np.ndarray | None = None
    has_mvs: bool = False  # bitstream field already written into the clip's motion buffer
    borrowed: bool = False  # an intra frame whose field came from the next frame's vectors


def _open(path: str):
    """Open `path` and return (container, first video stream) or raise VideoDecodeError."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(path, f"not a readable media file ({exc})") from exc
    video = container.streams.video
    if video and (container.format.name in _TEXT_FORMATS or video[0].codec_context.name in _TEXT_CODECS):
        container.close()
        raise VideoDecodeError(path, "not a video (FFmpeg reads it as plain text)")
    if not video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise VideoDecodeError(path, f"no video stream (streams: {kinds})")
    return container, video[0]


def _build_index(path: str, container, stream, index_tables: bool = True) -> _Index:
    """pts, compressed size and key flag of every frame: from an MP4's sample tables where they agree
    with the demuxer (no pass over the file), else from a demux pass (no decoding)."""
    import av

    tables = container_index(path, container, stream) if index_tables else None
    if tables is not None:  # the MP4 sample tables, checked against the demuxer at both ends
        pts, sizes, keys = tables
        has_pts = len(np.unique(pts)) == len(pts)
    else:
        pts, sizes, keys = [], [], []
        try:
            for pkt in demux_packets(container, stream):
                pts.append(pkt.pts if pkt.pts is not None else pkt.dts)
                sizes.append(pkt.size)
                keys.append(bool(pkt.is_keyframe))
        except (av.FFmpegError, OSError):
            pass  # truncated / damaged tail: keep the packets read so far
        has_pts = all(p is not None for p in pts) and len(set(pts)) == len(pts)
    if len(sizes) == 0:
        raise VideoDecodeError(path, "no video packets")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable") if has_pts else np.arange(len(pts))
    p = np.asarray(pts, dtype=np.int64)[order] if has_pts else np.arange(len(pts), dtype=np.int64)
    if has_pts and stream.time_base is not None:
        times = (p - p[0]).astype(np.float64) * float(stream.time_base)
    else:
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        times = np.arange(len(p), dtype=np.float64) / rate
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))  # presentation index of each packet, in decode order
    fwd, bwd = _reference_distances(rank)
    sizes_p, keys_p = np.asarray(sizes, dtype=np.int64)[order], np.asarray(keys, dtype=bool)[order]
    return _Index(p, sizes_p, keys_p, times, has_pts, fwd[order], bwd[order])


def _reference_distances(rank: np.ndarray, depth: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Temporal distance (frames) from each frame to its nearest possible past / future reference.

    `rank` holds presentation indices in decode order. A frame can only reference frames decoded before
    it, so its nearest past reference is the closest earlier-decoded frame shown before it (and likewise
    for the future). Looks back `depth` packets; 1 where there is none. Used to turn bitstream vectors
    that span several frames (B-frame GOPs) into per-frame displacements.
    """
    n = len(rank)
    lag = np.arange(1, depth + 1)
    prev_idx = np.arange(n)[:, None] - lag[None, :]
    prev = np.where(prev_idx >= 0, rank[np.clip(prev_idx, 0, None)], -1)
    cur = rank[:, None]
    past = np.where((prev >= 0) & (prev < cur), prev, -1).max(1)
    future = np.where(prev > cur, prev, np.iinfo(np.int64).max).min(1)
    fwd = np.where(past >= 0, rank - past, 1)
    bwd = np.where(future < np.iinfo(np.int64).max, future - rank, 1)
    return fwd.astype(np.int64), bwd.astype(np.int64)


def _frames(container, stream) -> Iterator:
    """Decode `stream`, skipping packets the decoder rejects and stopping quietly at a damaged tail."""
    import av

    try:
        for pkt in container.demux(stream):
            try:
                yield from pkt.decode()
            except av.FFmpegError:
                continue
    except (av.FFmpegError, OSError):
        try:
            yield from stream.codec_context.decode(None)
        except av.FFmpegError:
            return


def _bitstream_field(frame, conv: FrameConverter, out: np.ndarray, dist: tuple[int, int]) -> bool:
    """Write the exported MVs of `frame`, per frame of distance and mapped to S×S, into `out`.

    False when the frame carries no vectors. `dist` = (forward, backward) reference distances.
    """
    sd = frame.side_data.get("MOTION_VECTORS")
    if sd is None:
        return False
    mvs = sd.to_ndarray()
    if len(mvs) == 0:
        return False
    cell = motion_vector_cell(mvs)
    raster = rasterize_motion_vectors(mvs, frame.height, frame.width, cell=cell, distances=dist)
    resize_motion_field(raster, conv.geometry(frame), cell=cell, out=out)
    return True


def _decode_pass(path: str, cfg: DecodeConfig, index: _Index, wanted: np.ndarray, use_mvs: bool):
    """Single decode pass collecting the wanted frames, their references' luma and bitstream fields."""
    container, stream = _open(path)
    want_motion = cfg.motion != "none"
    targets = set(int(i) for i in wanted)
    last = int(wanted[-1])
    conv = FrameConverter(cfg.input_size, cfg.aspect, (cfg.max_cells, cfg.cell))
    sig = FrameConverter(cfg.signal_size, cfg.aspect) if cfg.stride > 1 else conv  # signals' resolution
    samples: list[_Sample] = []
    meta: dict = {"codec": stream.codec_context.name}
    a = cfg.signal_size
    motion = np.zeros((len(wanted), a, a, 2), dtype=np.float32) if want_motion else None
    meta["motion"] = motion
    try:
        stream.thread_type = "AUTO"
        # FFmpeg exports a picture's vectors when it is output, which with frame threads can be before
        # another thread has finished it: 1-3 of 64 frames got corrupt vectors, differing run to run
        # (measured on x264 defaults). One decoding thread makes them exact and the same every time.
        stream.codec_context.thread_count = 1 if use_mvs else cfg.threads
        if use_mvs:
            stream.codec_context.options = {"flags2": "+export_mvs"}
        _seek_near(container, stream, index, int(wanted[0]) - int(want_motion))
        lookup = {int(p): i for i, p in enumerate(index.pts)} if index.has_pts else None
        order = sorted(targets)
        keys = np.flatnonzero(index.keyframe) if (cfg.seek and index.has_pts) else np.zeros(0, np.int64)
        prev, prev_idx, prev_luma, counter, frames_buf = None, -1, None, -1, None
        borrow = None  # slot of a sampled frame without vectors (an I-frame) awaiting the next frame's
        frames = _frames(container, stream)
        while True:
            frame = next(frames, None)
            if frame is None:
                break
            counter += 1
            idx = lookup.get(frame.pts, prev_idx + 1) if lookup is not None else counter
            if borrow is not None:  # the frame after it references it: its vectors ≈ the I-frame's motion
                dist = (int(index.fwd_dist[idx]), int(index.bwd_dist[idx]))
                samples[borrow].borrowed = _bitstream_field(frame, sig, motion[borrow], dist)
                borrow = None
            if "orig_size" not in meta:
                rot = display_rotation_cw(frame)
                meta["rotation"] = rot
                meta["orig_size"] = (frame.width, frame.height) if rot % 180 else (frame.height, frame.width)
            luma = None
            if idx in targets and (not samples or idx > samples[-1].idx):
                rgb = conv.convert(frame)
                if frames_buf is None:  # the clip's frames in one array: no second copy when stacking
                    frames_buf = np.empty((len(wanted), *rgb.shape), dtype=np.uint8)
                    meta["frames"] = frames_buf
                frames_buf[len(samples)] = rgb
                smp = _Sample(idx, frames_buf[len(samples)], PICT_TYPES.get(int(frame.pict_type), "?"))
                if want_motion and prev is not None and idx > 0:
                    smp.luma = luma = sig.convert(frame, "gray")
                    smp.ref_luma = prev_luma if prev_luma is not None else sig.convert(prev, "gray")
                    dist = (int(index.fwd_dist[idx]), int(index.bwd_dist[idx]))
                    smp.has_mvs = use_mvs and _bitstream_field(frame, sig, motion[len(samples)], dist)
                    if use_mvs and not smp.has_mvs and idx < last:
                        borrow = len(samples)
                samples.append(smp)
            prev, prev_idx, prev_luma = frame, idx, luma
            if idx >= last:
                break
            # Length-independent cost: when a keyframe lies between here and the next frame needed (the
            # next sampled frame, or its reference), jump there instead of decoding the frames between.
            if len(keys) and borrow is None:
                nxt = next((t for t in order if t > idx), None)
                need = -1 if nxt is None else nxt - int(want_motion)
                k = (
                    int(keys[np.searchsorted(keys, need, side="right") - 1])
                    if need >= 0 and keys[0] <= need
                    else -1
                )
                if k > idx + 1 and _seek_to(container, stream, index, k):
                    frames = _frames(container, stream)
                    prev, prev_idx, prev_luma = None, k - 1, None
    finally:
        container.close()
    return samples, meta


def _seek_to(container, stream, index: _Index, key: int) -> bool:
    """Seek to keyframe ``key`` (presentation index); False (position unchanged) if FFmpeg refuses."""
    import av

    try:
        container.seek(int(index.pts[key]), backward=True, any_frame=False, stream=stream)
    except av.FFmpegError:
        return False
    return True


def _seek_near(container, stream, index: _Index, first: int) -> None:
    """Seek to the last keyframe at or before frame `first` (no-op near the start or without pts)."""
    import av

    if first <= 0 or not index.has_pts:
        return
    keys = np.flatnonzero(index.keyframe[: first + 1])
    if len(keys) == 0 or keys[-1] == 0:
        return
    try:
        container.seek(int(index.pts[keys[-1]]), backward=True, any_frame=False, stream=stream)
    except av.FFmpegError:
        container.seek(0, stream=stream)


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    """Consecutive batches of `items` holding about _CHUNK_PIXELS pixels of S×S frames each."""
    step = max(1, _CHUNK_PIXELS // (size * size))
    for k in range(0, len(items), step):
        yield items[k : k + step]


def _motion_and_residual(samples: list[_Sample], cfg: DecodeConfig, motion: np.ndarray):
    """Estimate missing fields in place in `motion` [T,S,S,2]; return residual [T,S,S] and sources."""
    t, s = len(samples), cfg.signal_size
    residual = np.zeros((t, s, s), dtype=np.float32)
    with_ref = [i for i, smp in enumerate(samples) if smp.ref_luma is not None]
    sources = ["none"] * t
    for i in with_ref:
        smp = samples[i]
        sources[i] = "bitstream" if smp.has_mvs else "bitstream_next" if smp.borrowed else "estimated"
    mot, res = torch.from_numpy(motion), torch.from_numpy(residual)

    def lumas(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        cur = torch.from_numpy(np.stack([samples[i].luma for i in idx])).float()
        return cur, torch.from_numpy(np.stack([samples[i].ref_luma for i in idx])).float()

    for idx in _chunks([i for i in with_ref if not (samples[i].has_mvs or samples[i].borrowed)], s):
        mot[idx] = estimate_motion(*lumas(idx), cfg.block_size, cfg.search_range, cfg.pyramid_levels)
    for idx in _chunks(with_ref, s):
        cur, ref = lumas(idx)
        res[idx] = residual_energy(cur, ref, mot[idx])
    return residual, sources


def _probe(path: str) -> tuple[str, float | None, _Index]:
    """Check the file, then (codec name, average frame rate, demux index) of its first video stream."""
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    container, stream = _open(path)
    try:
        rate = stream.average_rate or stream.guessed_rate
        return stream.codec_context.name, float(rate) if rate else None, _build_index(path, container, stream)
    finally:
        container.close()


def decode_clip(path: str | os.PathLike, cfg: DecodeConfig | None = None) -> DecodedClip:
    """Decode `cfg.num_frames` frames sampled uniformly in time, with motion and residual signals.

    Sampling: T instants evenly spaced (endpoints included; T=1 → the first frame) over the clip, or over
    the frames whose time lies in [start, end]; each picks the nearest frame by timestamp (so VFR is
    handled), ids then made strictly increasing. Frames are converted by swscale straight to the target
    size, display rotation applied (``rotation`` = clockwise degrees, ``orig_size`` = (H, W) as shown),
    then fitted to S×S by `aspect` ("native": the source aspect at most ``max_cells`` cells of ``cell``
    pixels, frames only). Timestamps are seconds since the stream's first frame; frame ids and
    packet sizes are in presentation order; ids index the whole video, packet_sizes the window. The frame
    index comes from an MP4's sample tables (checked against the demuxer at both ends) or else one demux
    pass (no decoding); then one decode pass that stops after the last sampled frame and, with ``seek``,
    jumps to the keyframe before each sample.

    Motion and residual maps are A×A, A = ``cfg.signal_size`` ≈ ``analysis_size`` (112 for 224 and 448
    inputs: selection needs per-patch sums only), with vectors in A-pixels. Motion is relative to each
    sampled frame's own reference, the previous decoded (presentation-order) frame. "auto" uses exported
    bitstream MVs when the codec has them (H.264, MPEG-4 part 2, ...) and block matching otherwise (HEVC,
    AV1, VP9); a mid-clip I-frame (no vectors) borrows those of the next frame, which references it
    (locally constant motion; source "bitstream_next"), else is block-matched; "bitstream" is
    the same but raises VideoDecodeError for codecs that cannot export MVs; "estimated" always block-
    matches; "none" skips motion (motion = residual = None). Bitstream vectors that span several frames
    (B-frame GOPs) are divided by the distance to the nearest possible reference, giving per-frame
    displacements. The first frame of the video (or one whose reference did not decode) has zero
    motion / residual and source "none".

    Edge cases: fewer frames than T → every frame is returned (len(clip) = N < T); a single-frame video →
    one frame, zero motion; odd sizes, 10-bit and rotated inputs are converted like any other. Packets
    the decoder rejects are skipped and a damaged / truncated tail ends decoding quietly, so a file cut
    mid-stream returns the sampled frames that did decode (possibly fewer than T; the sampling grid is
    the one planned from the packets found). Raises VideoDecodeError (path + reason) for a missing,
    empty, non-media (including plain text, which FFmpeg would render), audio-only or undecodable file
    (e.g. an MP4 cut before its moov index), an empty [start, end] window, or motion="bitstream" on a
    codec without MVs.
    """
    import av

    cfg = cfg or DecodeConfig()
    path = os.fspath(path)
    if cfg.aspect == "native" and cfg.motion != "none":
        raise ValueError("aspect 'native' decodes frames only (motion='none'): the codec signals are square")
    codec, rate, index = _probe(path)
    if cfg.motion == "bitstream" and codec not in MV_CODECS:
        raise VideoDecodeError(path, f"codec {codec!r} does not export motion vectors (use motion='auto')")
    use_mvs = cfg.motion in ("auto", "bitstream") and codec in MV_CODECS
    lo = -math.inf if cfg.start is None else cfg.start
    hi = math.inf if cfg.end is None else cfg.end
    window = np.flatnonzero((index.times >= lo - 1e-9) & (index.times <= hi + 1e-9))
    if len(window) == 0:
        raise VideoDecodeError(path, f"no video frames in window [{cfg.start}, {cfg.end}]")
    wanted = window[sample_positions(index.times[window], cfg.num_frames)]
    if index.has_pts:
        wanted = snap_to_keyframes(
            index.keyframe, window, wanted, cfg.sampling, with_reference=cfg.motion != "none"
        )
    try:
        samples, meta = _decode_pass(path, cfg, index, wanted, use_mvs)
    except (av.FFmpegError, OSError) as exc:  # e.g. a pixel format swscale cannot convert
        raise VideoDecodeError(path, f"decoding failed ({exc})") from exc
    if not samples:
        raise VideoDecodeError(path, "no decodable video frame")
    ids = np.array([smp.idx for smp in samples], dtype=np.int64)
    motion, residual, sources = meta["motion"], None, ["none"] * len(samples)
    if motion is not None:
        motion = motion[: len(samples)] if len(samples) < len(motion) else motion
        residual, sources = _motion_and_residual(samples, cfg, motion)
    times = index.times
    if not rate and len(times) > 1:
        rate = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
    return DecodedClip(
        path=path,
        frames=meta["frames"][: len(samples)],
        frame_ids=ids,
        timestamps=times[np.clip(ids, 0, len(times) - 1)].astype(np.float64),
        pict_types=[smp.pict for smp in samples],
        packet_sizes=index.sizes[window].copy(),
        num_frames_total=len(window),
        fps=float(rate or 0.0),
        codec=codec,
        orig_size=tuple(meta["orig_size"]),
        rotation=int(meta["rotation"]),
        motion=motion,
        residual=residual,
        motion_source=sources,
    )
