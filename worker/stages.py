"""What every stage thread of the worker shares: the end marker, the idle wait, queue hand-offs
that give up when the worker halts, and :class:`Stage`, a thread that keeps its failure."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from common.logging import get_logger

log = get_logger("worker.stages")

T = TypeVar("T")


class _End:
    def __repr__(self) -> str:
        return "END"


END: Final = _End()
"""Sentinel: no more input; flush and finish."""

IDLE_S = 0.1
"""How long a stage waits on an empty or full queue before looking at the halt flag again."""


def put(into: queue.Queue[T], item: T, halt: threading.Event) -> bool:
    """Put ``item`` on a bounded queue, waiting while it is full; False if halted first."""
    while not halt.is_set():
        try:
            into.put(item, timeout=IDLE_S)
            return True
        except queue.Full:
            continue
    return False


def get(source: queue.Queue[T], halt: threading.Event, timeout_s: float = IDLE_S) -> T | None:
    """The next item, or None when nothing came within ``timeout_s`` or the worker halted."""
    if halt.is_set():
        return None
    try:
        return source.get(timeout=timeout_s)
    except queue.Empty:
        return None


@dataclass
class Stage:
    """A worker thread that records the exception it died of."""

    name: str
    target: Callable[[], None]
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.context: contextvars.Context | None = None

    def start(self) -> None:
        """Start the thread with a copy of the caller's log context (worker id and so on)."""
        self.context = contextvars.copy_context()
        self.thread.start()

    def _run(self) -> None:
        try:
            assert self.context is not None
            self.context.run(self.target)
        except BaseException as exc:
            self.failure = exc
            log.exception("stage failed", stage=self.name)
