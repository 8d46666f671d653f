"""The overhead benchmark's split of a worker's CPU by thread (its figures are never asserted)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from benchmarks import overhead
from benchmarks.workers import WorkerProcess
from common.settings import KafkaSettings


def test_thread_cpu_charges_a_busy_thread_with_its_own_cpu() -> None:
    warm, stop = threading.Event(), threading.Event()

    def spin() -> None:
        while not stop.is_set():
            if time.thread_time() > 0.1:
                warm.set()

    first = overhead.thread_cpu(os.getpid())
    busy = threading.Thread(target=spin)
    busy.start()
    try:
        assert warm.wait(timeout=60)
        during = overhead.thread_cpu(os.getpid())
    finally:
        stop.set()
        busy.join()
    tid = busy.native_id
    assert tid is not None
    assert tid not in first
    assert during[tid] >= 0.05  # /proc counts in clock ticks (10 ms)


def test_threads_are_summed_by_role_and_unnamed_ones_are_native(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = {11: "scoring", 12: "tagstream-w-0-network-thread", 13: "kafka-io-tagstream-w-0"}
    monkeypatch.setattr(overhead, "thread_names", lambda _pid: names)
    first = {11: 1.0, 12: 2.0, 13: 0.5, 14: 0.0, 15: 3.0}
    last = {11: 1.5, 12: 2.25, 13: 0.75, 14: 0.5, 15: 3.0, 16: 0.25}
    assert overhead.by_name(first, last, pid=1) == {
        "scoring": 0.5,
        "producer network thread": 0.25,
        "consumer network thread (kafka-io)": 0.25,
        "native": 0.75,
    }


def test_without_py_spy_threads_keep_their_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overhead, "thread_names", lambda _pid: {})
    assert overhead.by_name({7: 1.0}, {7: 1.5, 8: 0.0}, pid=1) == {"thread 7": 0.5}


def test_a_lane_with_its_own_pythonpath_runs_that_trees_worker(tmp_path: Path) -> None:
    """``python -m worker`` puts its working directory ahead of PYTHONPATH, so a lane that
    compares code before a change must start in that tree."""
    tree = tmp_path / "tree"
    (tree / "worker").mkdir(parents=True)
    (tree / "worker" / "__init__.py").write_text("")
    (tree / "worker" / "__main__.py").write_text(
        "import os, worker\nopen(os.environ['MARK'], 'w').write(worker.__file__)\n"
    )
    mark = tmp_path / "mark"
    env = {"PYTHONPATH": str(tree), "MARK": str(mark)}
    process = WorkerProcess.start("lane", KafkaSettings(bootstrap="127.0.0.1:9"), {}, tmp_path, env)
    try:
        process.process.wait(timeout=60)
    finally:
        process.stop(timeout_s=5)
    assert mark.read_text() == str(tree / "worker" / "__init__.py")
