"""LLaVA-style JSON + a media folder → webdataset shards (optionally with precomputed codec patches).

Input: a JSON list of ``{"id", "image" | "video" (a path or a list of paths, relative to the media
folder), "conversations"}`` (also JSON Lines). Each record becomes one sample: the record as
``.json`` plus its media files (``.jpg``, ``.mp4``...) or, with ``precompute_codec``, one ``.npz``
:class:`PatchSelection` per media item. Records whose media is missing or unreadable are not
written; they are listed in :attr:`ConvertResult.failures` (and ``failures.txt`` in the output
folder). The others are written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from encoder.codec import CodecConfig, patchify
from llava_ov.data.samples import parse_record
from llava_ov.data.shards import IMAGE_EXTS, MEDIA_EXTS, ShardWriter, init_worker_process, sanitize_key

Item = tuple[str, bytes, list[tuple[str, bytes]]]


@dataclass
class ConvertResult:
    written: int = 0
    shards: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)

    @property
    def ok(self) -> bool:
        return not self.failures


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list of records, or JSON Lines (one record per line)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of records")
    return records


def media_paths(record: dict[str, Any]) -> list[str]:
    """Relative media paths a record names (``image`` / ``video`` / ``images`` / ``videos``)."""
    out: list[str] = []
    for name in ("image", "images", "video", "videos"):
        value = record.get(name)
        out += [value] if isinstance(value, str) else list(value or [])
    return out


def probe_media(path: Path) -> None:
    """Cheap readability check: decode one video frame / verify an image (raises on failure)."""
    if path.suffix.lower().lstrip(".") in IMAGE_EXTS:
        from PIL import Image

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
        parse_record(json.dumps(record))
    except ValueError as e:
        return key, f"bad record: {e}"
    media: list[tuple[str, bytes]] = []
    for rel in media_paths(record):
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


def _keys(records: list[dict[str, Any]]) -> list[str]:
    """Unique webdataset keys from the record ids (index when absent, suffixed when repeated)."""
    seen: set[str] = set()
    keys = []
    for i, rec in enumerate(records):
        try:
            key = sanitize_key(str(rec.get("id", f"{i:09d}")))
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
    """Convert (see module docstring); failures are collected, never raised."""
    from tqdm import tqdm

    codec = codec or CodecConfig()
    codec.validate()
    records = load_records(json_path)
    keys = _keys(records)
    job = partial(_job, media_root=Path(media_root), precompute=precompute_codec, codec=codec)
    result = ConvertResult()
    pool = ProcessPoolExecutor(workers, initializer=init_worker_process) if workers > 1 else None
    outputs: Iterator = pool.map(job, zip(records, keys), chunksize=8) if pool else map(job, zip(records, keys))
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
