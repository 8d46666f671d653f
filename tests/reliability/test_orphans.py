"""Children never outlive their parent: a parent killed with SIGKILL, which runs none of its
own clean-up, still takes every child with it (``common.lifeline``), and a SIGTERM'd demo
stops its children itself on the way out.

Each parent is a real process started here; the test reads its children's pids, kills it,
and polls ``/proc`` until every child is gone. Children still running at the deadline are
killed by the test, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.lifeline import ORPHANED_EXIT_CODE, end_with_this_process
from tests.worker.harness import env_for
from tests.worker.kafka_tools import WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 60.0
"""A generous deadline: a worker handed SIGTERM drains (revoke timeout 5 s) before it exits."""


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def assert_all_gone(pids: list[int]) -> None:
    try:
        wait_until(
            lambda: not any(running(pid) for pid in pids),
            GONE_WITHIN_S,
            f"children {[p for p in pids if running(p)]} gone after their parent died",
        )
    finally:
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """``parent(script)``: a Python process running ``script``, killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(script: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


DEMO_SUPERVISOR = """
    import os, sys, time
    from pathlib import Path
    from tagstream.supervisor import Supervisor, sigterm_raises

    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    with sigterm_raises(), Supervisor(Path(sys.argv[1]) / "logs") as supervisor:
        for name in ("trainer", "worker-0", "worker-1"):
            print(supervisor.start(name, sleeper, dict(os.environ)).process.pid, flush=True)
        print("ready", flush=True)
        time.sleep(600)
"""


def _children(process: subprocess.Popen[str], count: int) -> list[int]:
    assert process.stdout is not None
    pids = [int(process.stdout.readline()) for _ in range(count)]
    assert process.stdout.readline().strip() == "ready"
    assert all(running(pid) for pid in pids)
    return pids


def test_the_demos_children_end_when_the_demo_is_killed_with_sigkill(
    parent: Callable[[str], subprocess.Popen[str]],
) -> None:
    demo = parent(DEMO_SUPERVISOR)
    pids = _children(demo, 3)
    demo.kill()
    assert demo.wait(timeout=30) == -signal.SIGKILL
    assert_all_gone(pids)


def test_a_sigtermed_demo_stops_its_children_itself_and_exits_143(
    parent: Callable[[str], subprocess.Popen[str]],
) -> None:
    demo = parent(DEMO_SUPERVISOR)
    pids = _children(demo, 3)
    demo.terminate()
    assert demo.wait(timeout=60) == 128 + signal.SIGTERM  # its clean-up ran: not -SIGTERM
    assert not any(running(pid) for pid in pids)


@pytest.mark.integration
def test_a_local_stack_tied_to_its_starter_ends_when_the_starter_is_killed(
    parent: Callable[[str], subprocess.Popen[str]],
) -> None:
    """The demo's own stack (``LocalStack(..., end_with_this_process=True)``)."""
    starter = parent(
        """
        import sys, time
        from pathlib import Path
        from tagstream.stack import LocalStack, StackSettings

        stack = LocalStack(StackSettings(dir=Path(sys.argv[1]) / "stack"),
                           end_with_this_process=True)
        state, started = stack.up()
        print(state.kafka_pid, flush=True)
        print(state.redis_pid, flush=True)
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    pids = _children(starter, 2)
    starter.kill()
    starter.wait(timeout=30)
    assert_all_gone(pids)


@pytest.mark.integration
def test_workers_end_when_their_supervisor_is_killed_with_sigkill(
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
) -> None:
    env = env_for(service_env, topics(2), group_id, model_path=str(toy_model), worker_id="slot")
    tagstream = [str(Path(sys.executable).parent / "tagstream")]
    supervisor = processes(env, "supervisor", [*tagstream, "worker", "run", "--processes", "2"])
    pids: list[int] = supervisor.wait_for("workers started", 60)["pids"]
    listening = "health and metrics listening"  # after each worker took its signal handlers
    wait_until(
        lambda: len({line["worker_id"] for line in supervisor.events(listening)}) == 2,
        90,
        "both workers running",
    )
    supervisor.kill()
    assert_all_gone(pids)


def test_a_child_whose_parent_is_gone_before_it_asks_for_the_signal_exits_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fork race: the parent died before the child's prctl, so no signal would come.
    Seen from the child, that is a parent pid other than the one that forked it."""
    monkeypatch.setattr(os, "getpid", lambda: 1)  # the parent as the child would see it gone
    tie = end_with_this_process()
    monkeypatch.undo()
    child = subprocess.Popen(["sleep", "600"], preexec_fn=tie)  # noqa: PLW1509
    try:
        assert child.wait(timeout=30) == ORPHANED_EXIT_CODE
    finally:
        child.kill()
