"""How every entry point answers a user's mistake: one line on stderr, exit status 2.

``sys.exit(run_cli(lambda: main(argv)))`` in a script turns the project's error types and the usual
``ValueError`` / ``OSError`` of bad arguments (a typo in a config key, a missing folder, an unknown
size) into ``error: <what and where>`` and exit status 2, instead of a traceback. Under a launcher
(``RANK`` set) only rank 0 prints it, so a mistake reads the same on one rank or eight; the other
ranks exit 2 silently. ``LLAVA_OV_DEBUG=1`` lets the exception through with its traceback.

Config values that name files are checked when the config loads (:func:`check_local_path`), before any
data is generated or any model is built.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from encoder.typed_config import ConfigError

DEBUG_ENV = "LLAVA_OV_DEBUG"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)  # ConfigError is a ValueError
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_main_rank() -> bool:
    """Rank 0 of a launched job, or a process without a launcher."""
    return os.environ.get("RANK", "0") == "0"


def one_line(error: BaseException) -> str:
    """The first line of an error's message (an ``OSError``'s reason and file)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def run_cli(main: Callable[[], int | None]) -> int:
    """Run a script's ``main``; a user's mistake becomes one line and exit status 2 (see the module
    docstring); ``KeyboardInterrupt`` exits 130 without a traceback."""
    try:
        return int(main() or 0)
    except USER_ERRORS as e:
        if os.environ.get(DEBUG_ENV):
            raise
        if is_main_rank():
            print(f"error: {one_line(e)} ({DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if is_main_rank():
            print("interrupted", file=sys.stderr)
        return 130


def looks_local(value: str) -> bool:
    """Whether a weights / data reference is meant as a local path rather than a hub id
    (``org/name``): it exists, or starts like a path, or is not of the hub's form."""
    if Path(value).expanduser().exists():
        return True
    return value.startswith(("/", ".", "~")) or not _HUB_ID.match(value)


def check_local_path(value: str | None, key: str, kind: str = "folder") -> None:
    """``ConfigError`` when ``value`` (the config key ``key``) is a local path that does not exist;
    hub ids (``org/name``) pass, they are resolved when loaded."""
    if value is None or not looks_local(value):
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={value!r}: no such {kind} (a local path; hub ids look like 'org/name')")


__all__ = [
    "DEBUG_ENV",
    "USER_ERRORS",
    "check_local_path",
    "is_main_rank",
    "looks_local",
    "one_line",
    "run_cli",
]
