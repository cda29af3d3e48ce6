"""One run per output folder: ``{output_dir}/run.lock`` names the run that holds it.

A second run started on a folder a live run holds (a requeued job while the old one still runs) stops
in one line naming the holder (host, pid, start time) instead of training beside it and overwriting its
checkpoints. A lock left by a dead process is taken over with a warning: on the same host the holder's
pid is checked; from another host, a lock whose heartbeat (the file's mtime, touched every
:data:`HEARTBEAT_S` seconds by the holder) is older than :data:`STALE_S` is stale. Rank 0 takes the lock
for the whole run; the other ranks of that run share it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from encoder.cli import is_main_rank
from encoder.typed_config import ConfigError

logger = logging.getLogger("llava_ov.train")
LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class RunLock:
    """A held lock (see the module docstring); :meth:`release` when the run ends."""

    path: Path
    _stop: threading.Event | None = None

    @classmethod
    def acquire(cls, output_dir: str | Path, heartbeat: bool = True) -> RunLock:
        """Take the folder's lock (ConfigError naming the holder when a live run has it)."""
        path = Path(output_dir) / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                cls._check_holder(path)  # raises for a live holder; a stale lock is removed
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            lock = cls(path)
            if heartbeat:
                lock._start_heartbeat()
            return lock
        raise ConfigError(f"{path}: could not take the run lock (another run keeps taking it)")

    @staticmethod
    def _check_holder(path: Path) -> None:
        try:
            holder = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            holder, age = {}, STALE_S + 1  # unreadable or vanished: treat as stale
        host, pid = holder.get("host"), holder.get("pid")
        here = host == socket.gethostname()
        live = (
            _pid_alive(int(pid)) and int(pid) != os.getpid()
            if here and isinstance(pid, int)
            else age < STALE_S
        )
        if live:
            raise ConfigError(
                f"output_dir {path.parent} is held by a live run (host {host}, pid {pid}, started "
                f"{holder.get('started')}); wait for it, stop it, or use another output_dir"
            )
        logger.warning(
            "taking over the run lock of a dead run (host %s, pid %s, started %s): %s",
            host,
            pid,
            holder.get("started"),
            path,
        )
        path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True).start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self.path.unlink(missing_ok=True)


def acquire_for_run(output_dir: str | Path) -> RunLock | None:
    """Rank 0 takes the lock (before any process group exists); the other ranks of the run share it."""
    return RunLock.acquire(output_dir) if is_main_rank() else None


__all__ = ["HEARTBEAT_S", "LOCK_NAME", "STALE_S", "RunLock", "acquire_for_run"]
