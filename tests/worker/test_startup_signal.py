"""A worker told to stop while it is still starting exits with status 0, not killed by the
signal: a process manager scaling down at that moment must not read a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.worker.kafka_tools import ROOT


def _wait_until_caught(pid: int, signum: int, timeout_s: float = 30.0) -> None:
    """Wait until ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc/<pid>/status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (signum - 1) & 1:
                return
        time.sleep(0.01)
    raise AssertionError(f"no handler for signal {signum} after {timeout_s} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_ends_the_worker_with_status_0(signum: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # SIGTERM caught (the interpreter catches SIGINT itself, from its start): the top of
        # worker/__main__.py has run, the imports have not finished
        _wait_until_caught(worker.pid, signal.SIGTERM)
        worker.send_signal(signum)
        output, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "before the worker started" in output
