"""Frame index of an MP4 / MOV video track from its sample tables, without reading the packets.

Sampling needs the pts, compressed size and key flag of every frame. For an MP4 the ``moov`` box
already holds them (``stts`` decode-time deltas, ``ctts`` composition offsets, ``stsz`` sizes, ``stss``
sync samples), so a long video need not be read end to end before decoding: :func:`container_index`
parses them and checks them against the packets FFmpeg demuxes at the start and at the end of the
stream; any difference (edit lists that drop samples, fragmented files, another container) means the
caller falls back to the demux pass.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAX_MOOV = 256 << 20  # a moov larger than this is not read into memory (the demux pass is used)
CHECK_PACKETS = 24  # packets compared with FFmpeg's demuxer at each end of the stream


def _header(buf: bytes, pos: int, remaining: int) -> tuple[bytes, int, int] | None:
    """(type, header length, size) of the box at ``buf[pos:]`` with ``remaining`` bytes left in its
    parent (size 0: to the end; size 1: a 64-bit size follows), or None when it does not fit."""
    if remaining < 8 or len(buf) < pos + 8:
        return None
    size, kind = struct.unpack_from(">I4s", buf, pos)
    head = 8
    if size == 1:
        if remaining < 16 or len(buf) < pos + 16:
            return None
        size, head = struct.unpack_from(">Q", buf, pos + 8)[0], 16
    elif size == 0:
        size = remaining
    if size < head or size > remaining:
        return None
    return kind, head, size


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    pos = start
    while (box := _header(data, pos, end - pos)) is not None:
        kind, head, size = box
        yield kind, pos + head, pos + size
        pos += size


def _read_moov(path: Path) -> bytes | None:
    """The ``moov`` box of the file (top level, anywhere in it), or None."""
    with open(path, "rb") as f:
        file_size = f.seek(0, 2)
        pos = 0
        while True:
            f.seek(pos)
            box = _header(f.read(16), 0, file_size - pos)
            if box is None:
                return None
            kind, _, size = box
            if kind == b"moov":
                if size > _MAX_MOOV:
                    return None
                f.seek(pos)
                return f.read(size)
            pos += size


def _children(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    out: dict[bytes, list[tuple[int, int]]] = {}
    for kind, a, b in _boxes(data, start, end):
        out.setdefault(kind, []).append((a, b))
    return out


def _table(data: bytes, span: tuple[int, int], width: int, dtype: str) -> np.ndarray:
    """A full box's entry table: version/flags, entry count, then ``width`` fields per entry."""
    a, b = span
    (count,) = struct.unpack_from(">I", data, a + 4)
    n = count * width
    if a + 8 + 4 * n > b:
        raise ValueError("truncated sample table")
    return np.frombuffer(data, dtype=dtype, count=n, offset=a + 8).reshape(count, width)


def track_samples(path: str | Path, track: int) -> dict[str, np.ndarray | int] | None:
    """Decode order ``pts``, ``sizes``, ``keys`` and the ``timescale`` of the ``track``-th
    ``trak`` of an MP4 / MOV file from its sample tables, or None (not an MP4, fragmented, no such
    track, tables missing or inconsistent)."""
    try:
        moov = _read_moov(Path(path))
        if moov is None:
            return None
        top = _children(moov, 8, len(moov))
        if b"mvex" in top or len(top.get(b"trak", [])) <= track:
            return None  # fragmented (moof) files keep their samples outside the moov
        trak = _children(moov, *top[b"trak"][track])
        mdia = _children(moov, *trak[b"mdia"][0])
        stbl = _children(moov, *_children(moov, *mdia[b"minf"][0])[b"stbl"][0])
        a, _ = mdia[b"mdhd"][0]
        version = moov[a]
        (timescale,) = struct.unpack_from(">I", moov, a + (20 if version == 1 else 12))
        stts = _table(moov, stbl[b"stts"][0], 2, ">u4").astype(np.int64)
        deltas = np.repeat(stts[:, 1], stts[:, 0])
        a, _ = stbl[b"stsz"][0]
        fixed, count = struct.unpack_from(">II", moov, a + 4)
        if fixed:
            sizes = np.full(count, fixed, dtype=np.int64)
        else:
            sizes = np.frombuffer(moov, ">u4", count=count, offset=a + 12).astype(np.int64)
        if len(deltas) < count or count == 0 or timescale == 0:
            return None
        pts = np.concatenate([[0], np.cumsum(deltas[: count - 1])]).astype(np.int64)  # dts, then + ctts
        if b"ctts" in stbl:
            ctts = _table(moov, stbl[b"ctts"][0], 2, ">i4").astype(np.int64)
            offsets = np.repeat(ctts[:, 1], np.maximum(ctts[:, 0], 0))
            if len(offsets) < count:
                return None
            pts += offsets[:count]
        keys = np.ones(count, dtype=bool)
        if b"stss" in stbl:
            sync = _table(moov, stbl[b"stss"][0], 1, ">u4")[:, 0].astype(np.int64) - 1
            keys[:] = False
            keys[sync[(sync >= 0) & (sync < count)]] = True
        return {"pts": pts, "sizes": sizes, "keys": keys, "timescale": int(timescale)}
    except (OSError, KeyError, IndexError, ValueError, struct.error):
        return None


def demux_packets(container, stream):
    """The stream's packets in decode order, without the empty flush packet at the end."""
    for pkt in container.demux(stream):
        if not (pkt.size == 0 and pkt.pts is None and pkt.dts is None):
            yield pkt


def _demuxed(container, stream, limit: int) -> list[tuple[int, int, bool]]:
    out = []
    for pkt in demux_packets(container, stream):
        out.append((pkt.pts, pkt.size, bool(pkt.is_keyframe)))
        if len(out) >= limit:
            break
    return out


def container_index(path: str, container, stream) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(pts, sizes, keys) in decode order from the MP4 sample tables when they agree with FFmpeg's
    demuxer on the first and last :data:`CHECK_PACKETS` packets and on the frame count; otherwise None,
    with the container back at its first packet."""
    import av

    if "mp4" not in container.format.name and "mov" not in container.format.name:
        return None
    tables = track_samples(path, stream.index)
    if tables is None or stream.time_base is None or stream.frames not in (0, len(tables["sizes"])):
        return None
    if round(1 / float(stream.time_base)) != tables["timescale"]:
        return None
    try:
        found = _checked(container, stream, tables)
        if found is None:
            container.seek(0, stream=stream)
        return found
    except (av.FFmpegError, OSError):
        container.seek(0, stream=stream)
        return None


def _agree(
    records: list[tuple[int, int, bool]], pts: np.ndarray, sizes: np.ndarray, keys: np.ndarray, at: int
) -> bool:
    """The demuxed (pts, size, key) records equal the tables' entries from decode index ``at`` on."""
    if at < 0 or at + len(records) > len(pts):
        return False
    got = np.array([(p, z, k) for p, z, k in records], dtype=np.int64).reshape(-1, 3)
    want = np.stack(
        [pts[at : at + len(records)], sizes[at : at + len(records)], keys[at : at + len(records)]], 1
    )
    return bool(np.array_equal(got, want))


def _checked(container, stream, tables: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    pts, sizes, keys = tables["pts"], tables["sizes"], tables["keys"]
    n = len(sizes)
    head = _demuxed(container, stream, CHECK_PACKETS)
    if not head or any(p is None for p, _, _ in head):
        return None
    pts = pts + (head[0][0] - int(pts[0]))  # the edit list's offset, as FFmpeg applied it
    if not _agree(head, pts, sizes, keys, 0):
        return None
    key_at = np.flatnonzero(keys)
    start = int(key_at[np.searchsorted(key_at, max(0, n - CHECK_PACKETS), side="right") - 1])
    container.seek(int(pts[start]), backward=True, any_frame=False, stream=stream)
    tail = _demuxed(container, stream, n - start + CHECK_PACKETS)
    hits = np.flatnonzero(pts == tail[0][0]) if tail and tail[0][0] is not None else []
    # the demuxer must end exactly where the tables do
    if len(hits) != 1 or int(hits[0]) + len(tail) != n or not _agree(tail, pts, sizes, keys, int(hits[0])):
        return None
    return pts, sizes, keys


__all__ = ["CHECK_PACKETS", "container_index", "demux_packets", "track_samples"]
