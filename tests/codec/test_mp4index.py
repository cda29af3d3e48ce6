"""The MP4 sample tables as the frame index: the same index as a demux pass wherever they are used
(B-frames with an edit list, HEVC, MPEG-4, VFR, two video streams, audio first), and the demux pass where
they cannot be trusted (fragmented MP4, other containers)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from encoder.codec.decode import _build_index, _open
from encoder.codec.mp4index import container_index, track_samples
from encoder.codec.synthetic import render_scene

TB = Fraction(1, 90000)


def encode(path, codec="libx264", n=40, times=None, options=None, container_options=None, audio_first=False,
           extra_video=0, tb=TB):
    frames, *_ = render_scene("mover", 96, 64, n, 0)
    with av.open(str(path), "w", options=container_options or {}) as c:
        if audio_first:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        streams = []
        for _ in range(1 + extra_video):
            s = c.add_stream(codec, rate=30)
            s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
            s.codec_context.time_base = tb
            s.options = dict(options or {})
            streams.append(s)
        pts = np.round((np.arange(n) / 30 if times is None else times) / float(tb)).astype(np.int64)
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
            c.mux(a.encode(fr))
            c.mux(a.encode(None))
    return path


def indexes(path):
    out = []
    for tables in (True, False):
        c, s = _open(str(path))
        try:
            out.append(_build_index(str(path), c, s, index_tables=tables))
        finally:
            c.close()
    c, s = _open(str(path))
    try:
        used = container_index(str(path), c, s) is not None
    finally:
        c.close()
    return (*out, used)


def assert_same(a, b):
    for f in ("pts", "sizes", "keyframe", "times", "fwd_dist", "bwd_dist"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.has_pts == b.has_pts


@pytest.mark.parametrize("name, kw", [
    ("x264_defaults", {}),  # B-frames, 3 references, an edit list shifting pts
    ("x264_bpyramid", {"options": {"x264-params": "bframes=3:b-pyramid=normal:ref=4:keyint=12"}}),
    ("hevc", {"codec": "libx265", "options": {"x265-params": "log-level=error:keyint=12"}}),
    ("mpeg4", {"codec": "mpeg4", "tb": Fraction(1, 30000)}),  # its time base must fit 16 bits
    ("vfr", {"times": np.cumsum(np.r_[0, np.random.default_rng(0).uniform(0.02, 0.06, 39)])}),
    ("audio_first", {"audio_first": True}),
    ("two_video", {"extra_video": 1}),
])
def test_tables_give_the_demux_index(tmp_path, name, kw):
    path = encode(tmp_path / f"{name}.mp4", **kw)
    tables, demux, used = indexes(path)
    assert used, "the sample tables were not used"
    assert_same(tables, demux)


@pytest.mark.parametrize("name, kw", [
    ("fragmented.mp4", {"container_options": {"movflags": "frag_keyframe+empty_moov"}}),
    ("other.mkv", {}),
])
def test_demux_pass_where_the_tables_do_not_hold(tmp_path, name, kw):
    path = encode(tmp_path / name, **kw)
    tables, demux, used = indexes(path)
    assert not used
    assert_same(tables, demux)
    assert len(demux.pts) == 40


@pytest.mark.parametrize("entry", [0, -1])
def test_tables_that_disagree_fall_back(tmp_path, entry):
    """Tables that do not match what the demuxer reads (one size changed at either end) are not used,
    and the container is back at its first packet for the demux pass."""
    from encoder.codec.mp4index import _checked

    path = encode(tmp_path / "x.mp4")
    tables = track_samples(path, 0)
    tables["sizes"] = tables["sizes"].copy()
    tables["sizes"][entry] += 1
    c, s = _open(str(path))
    try:
        assert _checked(c, s, track_samples(path, 0)) is not None
        c.seek(0, stream=s)
        assert _checked(c, s, tables) is None
        c.seek(0, stream=s)
        assert sum(1 for p in c.demux(s) if p.size) == 40
    finally:
        c.close()
