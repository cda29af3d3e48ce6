"""A run without a launcher picks its own rendezvous port; if another process takes that port before the
store binds it, the run picks another instead of failing (seen in CI with jobs running side by side)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

SCRIPT = """
import socket, sys
from llava_ov.train import distributed as D
from llava_ov.train.config import DeepSpeedConfig
busy = int(sys.argv[1])
ports = iter([busy])
real = D._free_port
D._free_port = lambda: next(ports, None) or real()  # the first pick is a port someone else holds
env = D.init_distributed(DeepSpeedConfig())
import os, torch.distributed as dist
print("ok", env.rank, env.world_size, os.environ["MASTER_PORT"] != str(busy), dist.is_initialized())
"""


def test_a_taken_port_is_replaced(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    try:
        res = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(busy)], capture_output=True, text=True, timeout=300, env=env
        )
    finally:
        holder.close()
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "ok 0 1 True True"
