"""An on-disk cache of patch selections, keyed by file content and codec settings.

Evaluation decodes the same benchmark videos again and again (every checkpoint, every rerun of a task);
their selections depend only on the file's bytes and the :class:`CodecConfig`. :class:`PatchCache`
stores ``{root}/{settings}/{content}.npz`` where ``settings`` is a hash of the full config (and the
cache format) and ``content`` a BLAKE2b hash of the file's bytes, so a renamed or copied file still
hits and an edited file, or any changed setting, misses. Entries are written atomically (temporary
file + rename), so concurrent evaluation processes can share one cache. A corrupt entry is treated as
a miss and rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from encoder.codec.errors import VideoDecodeError
from encoder.codec.pipeline import CodecConfig, patchify
from encoder.codec.types import PatchSelection

CACHE_FORMAT = 1
_CHUNK = 1 << 22


def content_hash(path: str | os.PathLike) -> str:
    """BLAKE2b-128 of the file's bytes (raises :class:`VideoDecodeError` if it cannot be read)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise VideoDecodeError(path, f"cannot read file ({e.strerror or e})") from None
    return digest.hexdigest()


def settings_hash(cfg: CodecConfig) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "codec": dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


@dataclass
class PatchCache:
    """``cache.patchify(path, cfg)`` == ``patchify(path, cfg)``, computed at most once per content and
    settings. ``hits`` / ``misses`` count this object's lookups."""

    root: Path
    hits: int = 0
    misses: int = 0
    _memo: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def entry(self, path: str | os.PathLike, cfg: CodecConfig) -> Path:
        """Where the selection of ``path`` under ``cfg`` is (or would be) stored."""
        return self.root / settings_hash(cfg) / f"{self._content(path)}.npz"

    def _content(self, path: str | os.PathLike) -> str:
        # Re-hash only when the file changed (same path, size and mtime: same bytes in practice).
        try:
            st = os.stat(path)
        except OSError as e:
            raise VideoDecodeError(
                path, "file not found" if isinstance(e, FileNotFoundError) else str(e)
            ) from None
        key = (os.fspath(path), st.st_size, st.st_mtime_ns)
        if key not in self._memo:
            self._memo[key] = content_hash(path)
        return self._memo[key]

    def patchify(self, path: str | os.PathLike, cfg: CodecConfig) -> PatchSelection:
        file = self.entry(path, cfg)
        if file.is_file():
            try:
                sel = PatchSelection.load(file)
            except Exception:  # noqa: BLE001 - any unreadable entry (truncated zip, empty file...) is a miss
                sel = None  # recomputed and overwritten below
            if sel is not None:
                self.hits += 1
                sel.meta["path"] = os.fspath(path)  # the file asked for, not the one first cached
                return sel
        self.misses += 1
        sel = patchify(path, cfg)
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(sel.to_bytes())
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sel


__all__ = ["CACHE_FORMAT", "PatchCache", "content_hash", "settings_hash"]
