"""One run per output folder: a live holder refuses a second run in one line; a dead one's lock is taken
over with a warning; a lock from another host is stale once its heartbeat is old."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from encoder.typed_config import ConfigError
from llava_ov.train.lock import LOCK_NAME, STALE_S, RunLock

ROOT = Path(__file__).resolve().parents[3]
HOLD = (
    "from llava_ov.train.lock import RunLock; import sys, time; "
    "RunLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)"
)


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_live_holder_refuses_and_dead_holder_is_taken_over(tmp_path, caplog):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(ConfigError, match=rf"held by a live run \(host .*, pid {proc.pid}, started "):
            RunLock.acquire(tmp_path, heartbeat=False)
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LLAVA_OV_DEBUG")}
        res = subprocess.run(
            [sys.executable, "scripts/train_lmm.py", f"output_dir={tmp_path}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [x for x in res.stderr.splitlines() if x.strip() and "[WARNING]" not in x]
        assert res.returncode == 2 and len(lines) == 1 and f"pid {proc.pid}" in lines[0], res.stderr
    finally:
        proc.kill()
        proc.wait()
    with caplog.at_level(logging.WARNING, logger="llava_ov.train"):
        lock = RunLock.acquire(tmp_path, heartbeat=False)
    assert "taking over the run lock of a dead run" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_from_another_host_is_stale_when_its_heartbeat_is_old(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"host": "another-host", "pid": 1, "started": "2026-01-01 00:00:00"}))
    with pytest.raises(ConfigError, match="host another-host, pid 1"):
        RunLock.acquire(tmp_path, heartbeat=False)  # fresh heartbeat: maybe alive there
    old = time.time() - STALE_S - 5
    os.utime(path, (old, old))
    RunLock.acquire(tmp_path, heartbeat=False).release()
