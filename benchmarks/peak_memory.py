"""Peak resident memory a call adds, measured in a fresh process (Linux ``/proc``; None elsewhere).

The allocator of a long-lived process keeps what earlier work freed, so each measurement runs in a new
``spawn`` process: the high-water mark is reset to the current RSS (``/proc/self/clear_refs``), the
call runs, and the peak minus the starting RSS is what it added.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any


def status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``), None where unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_added_mb(fn: Callable[..., Any], *args: Any) -> float | None:
    """MB that ``fn(*args)`` adds to this process's RSS at its peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts at the current RSS
    except OSError:
        return None
    before = status_kb("VmRSS")
    fn(*args)
    peak = status_kb("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new spawned process (``fn`` must be importable: a module-level function)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


__all__ = ["in_fresh_process", "peak_added_mb", "status_kb"]
