"""What lmms-eval's visuals become for the plugin, and the record of samples whose media failed.

:func:`media_list` turns a task's ``doc_to_visual(doc)`` into our media items (see
:mod:`llava_ov.lmms_eval_plugin.model`). :class:`FailureLog` appends one JSON line per failed sample to
the file given by the ``failures=`` model arg, as soon as the sample fails:
``{"task", "split", "doc_id", "reason", "media"}`` with ``reason`` one of :data:`REASONS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from encoder.codec import VideoDecodeError
from llava_ov.infer.processor import NOT_FRAMES, is_frame

FRAME_LIST_MIN = 4
# missing: the file or folder is not there; not frames: a folder without image files; undecodable: the
# file (or a frame) cannot be decoded; unusable: the media loaded but no prompt could be built from it
REASONS = ("missing", "undecodable", "not frames", "unusable")


def media_list(visuals: Any) -> list[Any]:
    """lmms-eval visuals → our media items: a path or PIL image is one item; a list of more than
    :data:`FRAME_LIST_MIN` frames (PIL images or image paths, not mixed with videos) is the frames of
    one clip; a PIL image equal to one already listed is given once."""
    if visuals is None:
        return []
    if isinstance(visuals, (str, Path, Image.Image)):
        visuals = [visuals]
    items = [v for v in visuals if v is not None]
    if len(items) > FRAME_LIST_MIN and all(is_frame(v) for v in items):
        return [items]  # the frames of one clip
    unique: list[Any] = []
    for v in items:
        if isinstance(v, Image.Image) and any(_same_image(v, u) for u in unique):
            continue
        unique.append(v)
    return unique


def _same_image(a: Any, b: Any) -> bool:
    return isinstance(b, Image.Image) and (
        a is b or (a.size == b.size and a.mode == b.mode and a.tobytes() == b.tobytes())
    )


def describe(item: Any) -> str:
    """A short name for one media item: its path, ``N frames`` for a clip of frames, else its type."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, Sequence) and not isinstance(item, str):
        return f"{len(item)} frames" + (
            f" from {item[0]}" if item and isinstance(item[0], (str, Path)) else ""
        )
    return type(item).__name__


def media_names(media: Sequence[Any]) -> str:
    return ", ".join(describe(m) for m in media) or "no media"


def failure_reason(error: BaseException) -> str:
    """The :data:`REASONS` entry of a media error."""
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, VideoDecodeError):
        if error.reason == "file not found":
            return "missing"
        if error.reason == NOT_FRAMES:
            return "not frames"
    return "undecodable"


class FailureLog:
    """Appends failed samples to ``path`` (JSON lines; None: records nothing). Each line is one
    ``write`` to a file opened in append mode, so the processes of a multi-process run can share it."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, task: str, split: str, doc_id: int, reason: str, media: str) -> None:
        if self.path is None:
            return
        line = json.dumps(
            {"task": task, "split": split, "doc_id": int(doc_id), "reason": reason, "media": media}
        )
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


__all__ = [
    "FRAME_LIST_MIN",
    "REASONS",
    "FailureLog",
    "describe",
    "failure_reason",
    "media_list",
    "media_names",
]
