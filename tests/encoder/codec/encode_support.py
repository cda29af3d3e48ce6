"""Writing test videos with PyAV the way real files are made: the encoder's own defaults unless told
otherwise, explicit timestamps (VFR), extra video streams, an audio stream first, container options."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

TB = Fraction(1, 90000)


def encode(
    path,
    frames,
    codec="libx264",
    options=None,
    pix_fmt="yuv420p",
    times=None,
    extra_streams=0,
    tb=TB,
    container_options=None,
    audio_first=False,
):
    """Frames (uint8 [N, H, W, 3]) → ``path`` at 30 fps (or at ``times`` seconds), time base ``tb``."""
    with av.open(str(path), "w", options=container_options or {}) as c:
        if audio_first:
            audio = c.add_stream("aac", rate=16000)
            audio.layout = "mono"
        streams = []
        for _ in range(1 + extra_streams):
            s = c.add_stream(codec, rate=30)
            s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
            s.codec_context.time_base = tb
            s.options = dict(options or {})
            streams.append(s)
        pts = np.round((np.arange(len(frames)) / 30 if times is None else times) / float(tb)).astype(np.int64)
        for img, p in zip(frames, pts):
            for s in streams:
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts, f.time_base = int(p), tb
                c.mux(s.encode(f))
        for s in streams:
            c.mux(s.encode(None))
        if audio_first:
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, 0
            c.mux(audio.encode(fr))
            c.mux(audio.encode(None))
    return path
