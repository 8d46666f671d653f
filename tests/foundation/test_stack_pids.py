"""``tagstream stack down`` signals only processes the stack started: a pid in state.json
that now belongs to another process (here a ``sleep`` started by the test) is left alone and
reported as stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from unittest import mock

import pytest

from tagstream import stack as stack_module
from tagstream.stack import Identity, LocalStack, StackSettings

TAGSTREAM = [sys.executable, "-m", "tagstream"]


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process the stack never started."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield process
    process.kill()
    process.wait(timeout=30)


def write_state(stack_dir: Path, pid: int, started: dict[str, object] | None) -> None:
    stack_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, object] = {
        "kafka_pid": pid,
        "kafka_port": 1,
        "controller_port": 2,
        "redis_pid": pid,
        "redis_port": 3,
    }
    if started is not None:
        state["started"] = started
    (stack_dir / "state.json").write_text(json.dumps(state))


def cli_down(stack_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAGSTREAM_STACK_DIR": str(stack_dir)}
    return subprocess.run(
        [*TAGSTREAM, "stack", "down"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_pid_reused_by_another_process_is_not_signalled_and_is_reported(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    now = Identity.of(stranger.pid)
    assert now is not None
    # What the stack recorded when it started its Redis under this pid, long before.
    recorded = [now.start_ticks - 1000, ["redis-server", "--bind", "127.0.0.1"]]
    write_state(tmp_path / "stack", stranger.pid, {str(stranger.pid): recorded})
    down = cli_down(tmp_path / "stack")
    assert down.returncode == 0, down.stderr
    assert stranger.poll() is None, "the stranger was signalled"
    assert "nothing was running" in down.stdout
    assert "stale stack entry not signalled" in down.stderr
    assert f'"pid": {stranger.pid}' in down.stderr and "sleep 600" in down.stderr
    assert LocalStack(StackSettings(dir=tmp_path / "stack")).status() is None


def test_a_pid_with_no_recorded_start_is_not_signalled(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    """A state.json without start records (older, or hand-made) proves nothing about a pid."""
    write_state(tmp_path / "stack", stranger.pid, None)
    assert LocalStack(StackSettings(dir=tmp_path / "stack")).down() is False
    assert stranger.poll() is None, "the stranger was signalled"


def test_the_same_program_under_the_same_pid_but_started_later_is_not_the_stacks(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    now = Identity.of(stranger.pid)
    assert now is not None
    write_state(
        tmp_path / "stack",
        stranger.pid,
        {str(stranger.pid): [now.start_ticks - 1, list(now.cmdline)]},
    )
    stack = LocalStack(StackSettings(dir=tmp_path / "stack"))
    assert stack.down() is False
    assert stranger.poll() is None, "the stranger was signalled"


def test_a_process_matching_its_record_is_the_stacks_even_with_a_retitled_command_line(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    """Redis rewrites its arguments into ``redis-server 127.0.0.1:<port>``: the start time
    and the program name are what must match."""
    now = Identity.of(stranger.pid)
    assert now is not None
    write_state(
        tmp_path / "stack",
        stranger.pid,
        {str(stranger.pid): [now.start_ticks, ["sleep 600 (retitled)"]]},
    )
    assert LocalStack(StackSettings(dir=tmp_path / "stack")).down() is True
    assert stranger.wait(timeout=30) != 0


STUBBORN = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: Path(sys.argv[1]).write_text("SIGTERM"))
Path(sys.argv[2]).write_text("ready")
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("discard", [False, True])
def test_down_gives_a_server_its_grace_unless_the_data_is_discarded(
    tmp_path: Path, discard: bool
) -> None:
    """A clean stop sends SIGTERM first (a broker closes its logs); a stack whose data is
    thrown away (a test session's) is killed at once."""
    termed, ready = tmp_path / "termed", tmp_path / "ready"
    server = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, str(termed), str(ready)], start_new_session=True
    )
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.1)
        identity = Identity.of(server.pid)
        assert identity is not None
        write_state(
            tmp_path / "stack",
            server.pid,
            {str(server.pid): [identity.start_ticks, list(identity.cmdline)]},
        )
        with mock.patch("tagstream.stack.TERM_GRACE_S", 1.0):
            assert LocalStack(StackSettings(dir=tmp_path / "stack")).down(discard=discard)
        assert server.wait(timeout=30) == -signal.SIGKILL
        assert termed.exists() is not discard
    finally:
        server.kill()
        server.wait(timeout=30)


def ended_server(tmp_path: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """A server the stack started that has ended by itself and is not collected yet."""
    pid = stack_module._spawn(["true"], tmp_path / "server.log", None)
    for _ in range(300):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == "Z":
            break
        time.sleep(0.05)
    return pid, stack_module._children[pid]


class _NotOwned:
    """A stack state that no longer owns its pid (a server that died: its zombie has no
    command line to match)."""

    started: ClassVar[dict[str, object]] = {}

    def owns(self, pid: int) -> bool:
        return False


def test_a_server_that_died_on_its_own_is_collected_when_the_stack_stops(tmp_path: Path) -> None:
    pid, process = ended_server(tmp_path)
    assert stack_module._stop(_NotOwned(), "kafka node 2", pid) is False  # type: ignore[arg-type]
    assert process.returncode == 0, "the dead server's status was never collected"


def test_a_node_that_ended_unseen_is_collected_when_the_stack_goes_down(tmp_path: Path) -> None:
    """A node killed from outside and started again: its old process is in no state file."""
    _, process = ended_server(tmp_path)
    assert LocalStack(StackSettings(dir=tmp_path / "empty")).down() is False  # no state.json
    assert process.returncode == 0, "the old node's status was never collected"
