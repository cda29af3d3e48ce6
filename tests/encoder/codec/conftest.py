"""Small synthetic videos for the codec tests (generated once per session into a tmp dir)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoder.codec.synthetic import SyntheticClip, make_clip, render_scene, write_video

VFR_TIMES = np.array([0.0, 0.04, 0.1, 0.3, 0.31, 0.5, 0.9, 1.0, 1.04, 1.5])


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """Block matching on 2 shared cores: one intra-op thread avoids OpenMP oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("codec_videos")


@pytest.fixture(scope="session")
def mover_h264(video_dir) -> SyntheticClip:
    """128² 64-frame mover, H.264, GOP 16, no B-frames (I-frames at 0, 16, 32, 48)."""
    return make_clip(
        video_dir / "mover_h264.mp4", "mover", codec="h264", width=128, height=128, num_frames=64
    )


@pytest.fixture(scope="session")
def mover_hevc(video_dir) -> SyntheticClip:
    """Same scene as mover_h264, encoded with libx265 (no exported MVs)."""
    return make_clip(
        video_dir / "mover_hevc.mp4", "mover", codec="hevc", width=128, height=128, num_frames=64
    )


@pytest.fixture(scope="session")
def mover_bframes(video_dir) -> SyntheticClip:
    """The mover with 2 B-frames per mini-GOP (P vectors span 3 frames, B vectors point both ways)."""
    return make_clip(
        video_dir / "mover_b.mp4", "mover", codec="h264", width=128, height=128, num_frames=64, bframes=2
    )


@pytest.fixture(scope="session")
def static_h264(video_dir) -> SyntheticClip:
    return make_clip(video_dir / "static.mp4", "static", codec="h264", width=64, height=64, num_frames=32)


@pytest.fixture(scope="session")
def wide_h264(video_dir) -> SyntheticClip:
    """Non-square (128 wide × 64 high) clip for the aspect policies."""
    return make_clip(video_dir / "wide.mp4", "mover", codec="h264", width=128, height=64, num_frames=16)


@pytest.fixture(scope="session")
def rotated_h264(video_dir) -> SyntheticClip:
    """128×96 (w×h) mover flagged with a 90° clockwise display rotation (tkhd matrix)."""
    return make_clip(
        video_dir / "rotated.mp4", "mover", codec="h264", width=128, height=96, num_frames=24, rotation=90
    )


@pytest.fixture(scope="session")
def short_h264(video_dir) -> SyntheticClip:
    return make_clip(video_dir / "short.mp4", "mover", codec="h264", width=64, height=64, num_frames=10)


@pytest.fixture(scope="session")
def single_frame(video_dir) -> SyntheticClip:
    return make_clip(video_dir / "single.mp4", "static", codec="h264", width=64, height=64, num_frames=1)


@pytest.fixture(scope="session")
def odd_mpeg4(video_dir) -> SyntheticClip:
    """97×61 (odd sizes) MPEG-4 part 2 clip (libx264/libx265 refuse odd 4:2:0 sizes)."""
    return make_clip(video_dir / "odd.mp4", "mover", codec="mpeg4", width=97, height=61, num_frames=20)


@pytest.fixture(scope="session")
def hevc_10bit(video_dir) -> SyntheticClip:
    return make_clip(
        video_dir / "tenbit.mp4",
        "mover",
        codec="hevc",
        width=64,
        height=64,
        num_frames=12,
        pix_fmt="yuv420p10le",
    )


@pytest.fixture(scope="session")
def vfr_mkv(video_dir) -> tuple[Path, np.ndarray]:
    """10 frames with irregular timestamps: (path, timestamps in seconds)."""
    frames, *_ = render_scene("mover", 64, 64, len(VFR_TIMES), seed=3)
    path = video_dir / "vfr.mkv"
    write_video(path, frames, timestamps=VFR_TIMES)
    return path, VFR_TIMES.copy()


@pytest.fixture(scope="session")
def long_mkv(video_dir) -> SyntheticClip:
    """64-frame Matroska clip (no trailing index needed to read it), used for truncation."""
    return make_clip(video_dir / "long.mkv", "mover", codec="h264", width=64, height=64, num_frames=64)


@pytest.fixture(scope="session")
def audio_only(video_dir) -> Path:
    """A one-second 8 kHz PCM WAV file (no video stream)."""
    import av

    path = video_dir / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        t = np.arange(8000) / 8000.0
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
