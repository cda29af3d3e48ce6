"""Raw webdataset sample → conversation + :class:`PatchSelection` per media item (or a skip marker).

Videos and images go through :func:`encoder.codec.patchify` with the source's :class:`CodecConfig`
(images always use the ``image`` mode); ``.npz`` fields are precomputed selections. Nothing here
raises on bad data: every failure becomes a :class:`Skipped` with its reason.
"""

from __future__ import annotations

import json
import tempfile
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from encoder.codec import CodecConfig, PatchSelection, patchify
from llava_ov.data.shards import IMAGE_EXTS, NPZ_EXT, VIDEO_EXTS, media_fields
from llava_ov.data.stats import Skipped
from llava_ov.text.conversation import normalize_conversation, placeholder_kinds

MediaKind = Literal["auto", "video", "image", "text"]
MEDIA_KINDS: tuple[str, ...] = typing.get_args(MediaKind)


@dataclass
class MediaSample:
    """A decoded sample: the JSON record and its media, in placeholder order."""

    key: str
    record: dict[str, Any]
    media: list[PatchSelection] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "image" | "video" per media item
    source: str = ""


def _declared_media(record: dict[str, Any]) -> int:
    """Number of media files the LLaVA record names in ``image`` / ``video`` (str or list)."""
    count = 0
    for name in ("image", "video", "images", "videos"):
        value = record.get(name)
        if isinstance(value, str) and value:
            count += 1
        elif isinstance(value, list):
            count += len(value)
    return count


def parse_record(data: bytes | str | None) -> dict[str, Any]:
    """The JSON record of a sample; ValueError when absent, unparsable or not a conversation."""
    if data is None:
        raise ValueError("sample has no .json field")
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unparsable json ({e})") from None
    if not isinstance(record, dict):
        raise ValueError(f"json must be an object, got {type(record).__name__}")
    normalize_conversation(record)  # raises ValueError on a malformed conversation
    return record


def selection_kind(sel: PatchSelection) -> str:
    return "image" if sel.meta.get("mode") == "image" or sel.num_frames == 1 else "video"


def field_kind(name: str) -> str | None:
    ext = name.rsplit(".", 1)[-1].lower()
    return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else None


def decode_media(name: str, data: bytes, codec: CodecConfig) -> PatchSelection:
    """One media field → :class:`PatchSelection` (raises on undecodable data)."""
    ext = name.rsplit(".", 1)[-1].lower()
    if ext == NPZ_EXT:
        return PatchSelection.from_bytes(data)
    with tempfile.NamedTemporaryFile(suffix=f".{ext}") as f:
        f.write(data)
        f.flush()
        return patchify(f.name, codec)


def _check_counts(record: dict[str, Any], found: list[str], fields: list[str], key: str, source: str):
    """A skip marker when the placeholders / declared media do not match the media fields."""
    expected = max(len(found), _declared_media(record))
    if expected > len(fields):
        return Skipped(key, "missing_media", f"{expected} media expected, {len(fields)} present", source)
    if found and len(found) != len(fields):
        return Skipped(key, "bad_sample", f"{len(found)} placeholders but {len(fields)} media fields", source)
    return None


def decode_sample(
    raw: dict[str, Any] | Skipped, codec: CodecConfig, source: str = "", media_kind: str = "auto"
) -> MediaSample | Skipped:
    """Decode one raw webdataset sample (see module docstring); never raises on bad data.

    ``media_kind``: "auto" (kinds from placeholders / files), "video" or "image" (the kind of media
    without placeholders), "text" (media fields are ignored). Skip markers pass through.
    """
    if isinstance(raw, Skipped):
        return raw
    key = str(raw.get("__key__", "?"))
    try:
        record = parse_record(raw.get("json"))
    except ValueError as e:
        return Skipped(key, "bad_json", str(e)[:300], source)
    found = placeholder_kinds(normalize_conversation(record))
    fields = [] if media_kind == "text" else media_fields(raw)
    if (bad := _check_counts(record, found, fields, key, source)) is not None:
        return bad
    media: list[PatchSelection] = []
    for name in fields:
        try:
            media.append(decode_media(name, raw[name], codec))
        except Exception as e:  # noqa: BLE001 - any undecodable media is a skip, never a crash
            return Skipped(key, "corrupt_media", f"{name}: {type(e).__name__}: {e}"[:300], source)
    if found:
        kinds = found
    elif media_kind in ("video", "image"):
        kinds = [media_kind] * len(media)
    else:
        kinds = [field_kind(n) or selection_kind(s) for n, s in zip(fields, media)]
    return MediaSample(key, record, media, kinds, source)
