"""A worker told to stop while it is still starting exits with status 0, not killed by the
signal: a process manager scaling down at that moment must not read a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.worker.kafka_tools import ROOT


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
        time.sleep(0.5)  # past the interpreter's start, well inside the imports (torch)
        worker.send_signal(signum)
        output, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "before the worker started" in output
