"""Skipped-sample markers and the counters that follow them to the main process.

Bad samples never raise inside the data pipeline. The code that reads a sample returns a
:class:`Skipped` marker instead; markers travel down the pipeline (through DataLoader workers) and are
attached to the next batch (``LMMBatch.skipped``). The main process feeds each batch's markers into
one :class:`DataStats`, which counts them per reason and logs the first few with the sample key.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("llava_ov.data")

#: Reasons a sample is skipped (``Skipped.reason``).
REASONS = (
    "bad_json",  # no / unparsable / invalid JSON conversation
    "missing_media",  # the conversation references media the sample does not carry
    "corrupt_media",  # media that cannot be decoded (VideoDecodeError, bad image, bad npz)
    "too_long",  # cannot fit max_length / max_tokens / max_media_tokens
    "bad_sample",  # anything else wrong with the sample (placeholder mismatch, no answer, ...)
    "bad_shard",  # an unreadable shard or tar member (key = shard url)
)


@dataclass(frozen=True)
class Skipped:
    """A sample the pipeline dropped: yielded in place of the sample, counted downstream."""

    key: str
    reason: str
    detail: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown skip reason {self.reason!r}; expected one of {REASONS}")


@dataclass
class DataStats:
    """Per-reason skip counts plus counts of samples used; lives in the main process.

    ``log_first``: how many skips are logged (``logging.WARNING``, with key and reason); later ones
    are only counted. A sample skipped again (a repeating stream meets it every pass) is counted each
    time but logged once.
    """

    log_first: int = 10
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)
    _logged: int = 0
    _seen: set = field(default_factory=set)

    @property
    def total_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    def record(self, skip: Skipped) -> None:
        self.skipped[skip.reason] += 1
        if skip.source:
            self.by_source[skip.source] += 1
        if self._logged < self.log_first and (skip.source, skip.key, skip.reason) not in self._seen:
            self._seen.add((skip.source, skip.key, skip.reason))
            self._logged += 1
            where = f" [{skip.source}]" if skip.source else ""
            logger.warning("skipped sample %s%s: %s (%s)", skip.key, where, skip.reason, skip.detail)
            if self._logged == self.log_first:
                logger.warning("further skipped samples are counted but not logged")

    def record_all(self, skips: Iterable[Skipped]) -> None:
        for skip in skips:
            self.record(skip)

    def update(self, batch: Any) -> None:
        """Count a batch: its ``skipped`` markers and its ``num_samples`` used samples."""
        self.record_all(getattr(batch, "skipped", ()))
        self.used += int(getattr(batch, "num_samples", 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "used": self.used,
            "skipped": self.total_skipped,
            **{f"skipped/{k}": v for k, v in self.skipped.items()},
        }

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"used {self.used} samples, skipped {self.total_skipped} ({reasons})"
