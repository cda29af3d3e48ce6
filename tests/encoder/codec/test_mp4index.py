"""The MP4 sample tables as the frame index: the same index as a demux pass wherever they are used
(B-frames with an edit list, HEVC, MPEG-4, VFR, two video streams, audio first), and the demux pass where
they cannot be trusted (fragmented MP4, other containers)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from encode_support import encode as write

from encoder.codec.decode import _build_index, _open
from encoder.codec.mp4index import container_index, track_samples
from encoder.codec.synthetic import render_scene


def encode(path, n=40, **kw):
    """The mover (96 x 64, ``n`` frames) written by :func:`encode_support.encode` with ``kw``."""
    frames, *_ = render_scene("mover", 96, 64, n, 0)
    return write(path, frames, **kw)


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


@pytest.mark.parametrize(
    "name, kw",
    [
        ("x264_defaults", {}),  # B-frames, 3 references, an edit list shifting pts
        ("x264_bpyramid", {"options": {"x264-params": "bframes=3:b-pyramid=normal:ref=4:keyint=12"}}),
        ("hevc", {"codec": "libx265", "options": {"x265-params": "log-level=error:keyint=12"}}),
        ("mpeg4", {"codec": "mpeg4", "tb": Fraction(1, 30000)}),  # its time base must fit 16 bits
        ("vfr", {"times": np.cumsum(np.r_[0, np.random.default_rng(0).uniform(0.02, 0.06, 39)])}),
        ("audio_first", {"audio_first": True}),
        ("two_video", {"extra_streams": 1}),
    ],
)
def test_tables_give_the_demux_index(tmp_path, name, kw):
    path = encode(tmp_path / f"{name}.mp4", **kw)
    tables, demux, used = indexes(path)
    assert used, "the sample tables were not used"
    assert_same(tables, demux)


@pytest.mark.parametrize(
    "name, kw",
    [
        ("fragmented.mp4", {"container_options": {"movflags": "frag_keyframe+empty_moov"}}),
        ("other.mkv", {}),
    ],
)
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
