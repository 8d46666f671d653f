"""Child processes for the demo: each in its own session, all stopped on the way out.

The way out may be an exception, Ctrl+C or SIGTERM (see :func:`sigterm_raises`), when
``stop_all`` stops them in order; or a death no code of this process sees (SIGKILL, the
OOM killer), when each child gets SIGTERM from the kernel (``common.lifeline``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from common.lifeline import end_with_this_process


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    """Start named children with their output in log files; stop every one on exit."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=end_with_this_process(),  # noqa: PLW1509 - see common.lifeline
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def failed(self) -> list[Child]:
        """Children that have exited with a non-zero status."""
        return [c for c in self.children if c.process.poll() not in (None, 0)]

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child's process group, then SIGKILL what is left after the timeout."""
        for child in self.children:
            _signal(child, signal.SIGTERM)
        for child in self.children:
            try:
                child.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal(child, signal.SIGKILL)
                child.process.wait()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` in the main thread while inside, so that ``finally``
    blocks and ``ExitStack`` callbacks run (Python's default would end the process without
    them); the previous handler comes back on the way out."""

    def leave(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _signal(child: Child, sig: signal.Signals) -> None:
    if child.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, sig)
