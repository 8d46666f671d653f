"""``--processes N``: N worker processes on one host, one slot each, sharing one group.

Slot ``i`` gets ``worker_id`` ``{base}-{i}`` (so its transactional id is stable across
restarts), ``group_instance_id`` ``{id}-{i}`` when static membership is on, and metrics port
``port + i`` (0 stays 0: each picks a free port). SIGTERM/SIGINT are passed on to every
child; the supervisor waits for all and exits with the worst status. A supervisor that dies
without passing anything on (SIGKILL) takes its workers with it: each gets SIGTERM from the
kernel (``common.lifeline``) and drains as it would on ``kill``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from common.lifeline import end_with_this_process
from common.logging import get_logger
from worker.settings import WorkerSettings

log = get_logger("worker.supervisor")


def slot_environment(settings: WorkerSettings, slot: int) -> dict[str, str]:
    """The ``TAGSTREAM_WORKER_*`` overrides for one slot."""
    base = settings.worker_id or socket.gethostname()
    env = {"TAGSTREAM_WORKER_WORKER_ID": f"{base}-{slot}"}
    if settings.group_instance_id:
        env["TAGSTREAM_WORKER_GROUP_INSTANCE_ID"] = f"{settings.group_instance_id}-{slot}"
    if settings.metrics_port:
        env["TAGSTREAM_WORKER_METRICS_PORT"] = str(settings.metrics_port + slot)
    return env


def supervise(settings: WorkerSettings, processes: int) -> int:
    """Run ``processes`` workers until they all end; returns the worst exit status."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=os.environ | slot_environment(settings, slot),
            preexec_fn=end_with_this_process(),  # noqa: PLW1509 - see common.lifeline
        )
        for slot in range(processes)
    ]
    log.info("workers started", pids=[child.pid for child in children])

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = [child.returncode for child in children]
    log.info("workers ended", exit_codes=codes)
    return max((abs(code) for code in codes), default=0)
