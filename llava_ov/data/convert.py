"""LLaVA-style JSON + a media folder → webdataset shards (optionally with precomputed codec patches).

Input: a JSON list of ``{"id", "image" | "video" (a path or a list of paths, relative to the media
folder), "conversations"}`` (also JSON Lines). Each record becomes one sample: the record as
``.json`` plus its media files (``.jpg``, ``.mp4``...) or, with ``precompute_codec``, one ``.npz``
:class:`PatchSelection` per media item (images under the same token cap as clips: at most
``select.budget`` patches unless ``image_max_cells`` says otherwise, fitted at their aspect as the
training loader fits them). A record that is not an object with a list of turns, or whose
media is missing or unreadable, is not written; it is listed in :attr:`ConvertResult.failures` (and
``failures.txt`` in the output folder), counted by reason. The others are written.

An unreadable JSON file or a missing media folder is a :class:`ConvertError` before anything is written.
Shards are written under a temporary name and renamed when complete: an interruption never leaves a
partial shard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from encoder.codec import CodecConfig, patchify
from llava_ov.data.samples import parse_record
from llava_ov.data.shards import IMAGE_EXTS, MEDIA_EXTS, ShardWriter, init_worker_process, sanitize_key

Item = tuple[str, bytes, list[tuple[str, bytes]]]


class ConvertError(ValueError):
    """The input as a whole cannot be converted (one line: what and where)."""


@dataclass
class ConvertResult:
    written: int = 0
    shards: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)

    @property
    def ok(self) -> bool:
        return not self.failures

    def failures_by_reason(self) -> dict[str, int]:
        """Failed records per kind of reason (the text before the first colon)."""
        counts: dict[str, int] = {}
        for _, reason in self.failures:
            kind = reason.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def load_records(path: str | Path) -> list[Any]:
    """A JSON list of records, or JSON Lines (one record per line); :class:`ConvertError` when the
    file cannot be read or parsed (with the line and column)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ConvertError(
                            f"{path}: line {number}, column {e.colno}: {e.msg} (JSON Lines)"
                        ) from None
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: line {e.lineno}, column {e.colno}: {e.msg}") from None
    return records


def media_paths(record: dict[str, Any]) -> list[str]:
    """Relative media paths a record names (``image`` / ``video`` / ``images`` / ``videos``);
    ValueError when one is not a path or a list of paths."""
    out: list[str] = []
    for name in ("image", "images", "video", "videos"):
        value = record.get(name)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else None
        if value is not None and (values is None or not all(isinstance(v, str) for v in values)):
            raise ValueError(f"'{name}' must be a path or a list of paths, got {value!r}"[:200])
        out += values or []
    return out


def probe_media(path: Path) -> None:
    """Cheap readability check: decode one video frame / verify an image (raises on failure)."""
    if path.suffix.lower().lstrip(".") in IMAGE_EXTS:
        with Image.open(path) as im:
            im.verify()
        return
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        next(container.decode(video=0))


def convert_record(
    record: dict[str, Any], key: str, media_root: Path, precompute: bool, codec: CodecConfig
) -> Item | tuple[str, str]:
    """One record → ``(key, json, media)`` or ``(key, failure reason)``."""
    try:
        if not isinstance(record, dict):
            raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
        parse_record(json.dumps(record))
        paths = media_paths(record)
    except ValueError as e:
        return key, f"bad record: {e}"[:300]
    media: list[tuple[str, bytes]] = []
    for rel in paths:
        path = media_root / rel
        ext = path.suffix.lower().lstrip(".")
        if not path.is_file():
            return key, f"missing media: {rel}"
        if ext not in MEDIA_EXTS:
            return key, f"unsupported media suffix: {rel}"
        try:
            if precompute:
                media.append(("npz", patchify(path, codec).to_bytes()))
            else:
                probe_media(path)
                media.append((ext, path.read_bytes()))
        except Exception as e:  # noqa: BLE001 - any unreadable file is a listed failure
            return key, f"corrupt media: {rel} ({type(e).__name__}: {e})"[:300]
    return key, json.dumps(record, ensure_ascii=False).encode(), media


def _keys(records: list[Any]) -> list[str]:
    """Unique webdataset keys from the record ids (index when absent or not an object, suffixed when
    repeated)."""
    seen: set[str] = set()
    keys = []
    for i, rec in enumerate(records):
        try:
            key = sanitize_key(str(rec.get("id", f"{i:09d}") if isinstance(rec, dict) else f"{i:09d}"))
        except ValueError:
            key = f"{i:09d}"
        if key in seen:
            key = f"{key}_{i}"
        seen.add(key)
        keys.append(key)
    return keys


def _job(args: tuple[dict[str, Any], str], media_root: Path, precompute: bool, codec: CodecConfig):
    return convert_record(args[0], args[1], media_root, precompute, codec)


def convert_llava_json(
    json_path: str | Path,
    media_root: str | Path,
    out_dir: str | Path,
    *,
    precompute_codec: bool = False,
    codec: CodecConfig | None = None,
    workers: int = 1,
    max_samples: int = 1000,
    prefix: str = "shard",
    progress: bool = True,
) -> ConvertResult:
    """Convert (see module docstring); per-record failures are collected, never raised."""
    codec = codec or CodecConfig()
    if precompute_codec and codec.image_max_cells is None:  # a still never exceeds the clips' token cap
        codec = replace(codec, image_max_cells=codec.select.budget)
    codec.validate()
    if not Path(media_root).is_dir():
        raise ConvertError(f"media folder not found: {media_root}")
    records = load_records(json_path)
    keys = _keys(records)
    job = partial(_job, media_root=Path(media_root), precompute=precompute_codec, codec=codec)
    result = ConvertResult()
    pool = ProcessPoolExecutor(workers, initializer=init_worker_process) if workers > 1 else None
    outputs: Iterator = (
        pool.map(job, zip(records, keys), chunksize=8) if pool else map(job, zip(records, keys))
    )
    try:
        with ShardWriter(out_dir, prefix, max_samples) as writer:
            for out in tqdm(outputs, total=len(records), desc="convert", unit="sample", disable=not progress):
                if len(out) == 2:
                    result.failures.append(out)
                    continue
                writer.write(*out)
                result.written += 1
        result.shards = list(writer.paths)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    failures_file = Path(out_dir) / "failures.txt"
    if result.failures:
        failures_file.write_text("".join(f"{k}\t{r}\n" for k, r in result.failures))
    elif failures_file.exists():
        failures_file.unlink()
    return result
