"""Errors raised by the codec front-end."""

from __future__ import annotations

import os


class VideoDecodeError(ValueError):
    """One exception type for any unreadable input; ``str()`` is ``f"{path}: {reason}"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep picklable across DataLoader workers
        return (type(self), (self.path, self.reason))
