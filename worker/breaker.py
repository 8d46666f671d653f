"""The inference circuit breaker: stop answering while the model itself is broken.

One poisoned article makes its batch fail, and :mod:`worker.inference` halves the batch
until the article stands alone: it is dead-lettered, its neighbours are predicted. A model
that fails on everything (a sticky CUDA error, a broken runtime) would make every article
fail alone, and the worker would dead-letter the whole stream. So when every article of a
batch failed, the scorer asks the model for its warm-up input, which is known good
(:class:`worker.inference.Scored` ``systemic``): if that fails too the fault is the model's,
and the batch is *not* answered: the scoring stage rewinds its partitions (nothing of it is
published, nothing past it committed) and reports a failed batch here.

    closed ──(>= threshold of the last ``window`` batches failed)──> open
    open ──(backoff passed: the next batch is a trial)──> half-open
    half-open ──(trial scored)──> closed         half-open ──(trial failed)──> open, backoff x2

While open the scoring stage waits out the backoff (bounded, doubling from
``backoff_initial_s`` to ``backoff_max_s``) before it scores again; the batches behind it
wait, the intake fills and the poll thread pauses the partitions, so the group membership
holds; a drain cuts the wait short. ``/healthz`` fails while the breaker is open. A batch
that scores closes it and clears the window and the backoff.

Thread-safe: the scoring thread records and waits, the health server reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Literal

from common.logging import get_logger
from worker.metrics import Metrics

log = get_logger("worker.breaker")

State = Literal["closed", "open", "half-open"]

WAIT_SLICE_S = 0.1
"""How often a wait looks at the drain flag."""


class Breaker:
    """Counts failed batches in a window and holds scoring back while the model is broken."""

    def __init__(
        self,
        *,
        window: int,
        threshold: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        metrics: Metrics,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 batch, not {window}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("backoff_initial_s must be positive and at most backoff_max_s")
        self._failures_to_open = max(1, math.ceil(threshold * window))
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._initial_s = backoff_initial_s
        self._max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._metrics = metrics
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._retry_at = 0.0
        self.last_error = ""

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def is_open(self) -> bool:
        """Open or half-open: inference is failing and not yet shown to work again."""
        return self.state != "closed"

    def describe(self) -> str:
        with self._lock:
            wait_s = max(0.0, self._retry_at - time.monotonic())
            return (
                f"inference failing ({self.last_error}); breaker {self._state}, "
                f"next try in {wait_s:.1f} s"
            )

    def failed(self, error: str) -> None:
        """A batch failed because the model did: count it; open or re-open when due."""
        with self._lock:
            self.last_error = error
            self._outcomes.append(True)
            if self._state == "half-open":
                self._backoff_s = min(self._max_s, self._backoff_s * 2)
                self._open()
            elif self._state == "closed" and sum(self._outcomes) >= self._failures_to_open:
                self._open()
                self._metrics.breaker_trips.inc()

    def succeeded(self) -> None:
        """A batch was scored: the model works; close and forget the failures."""
        with self._lock:
            was = self._state
            self._outcomes.append(False)
            if was == "closed":
                return
            self._state = "closed"
            self._outcomes.clear()
            self._backoff_s = self._initial_s
            self._metrics.breaker_open.set(0)
        log.info("inference works again; breaker closed")

    def wait(self, halt: threading.Event, hurry: threading.Event | None = None) -> bool:
        """While open, wait for the backoff to pass (False if halted first); the batch
        scored next is the trial. ``hurry`` (the worker is draining) cuts the wait short, so
        what is left is tried, and rewound if it fails, before the drain deadline."""
        with self._lock:
            if self._state != "open":
                return True
            deadline = self._retry_at
        while (remaining := deadline - time.monotonic()) > 0:
            if hurry is not None and hurry.is_set():
                break
            if halt.wait(min(remaining, WAIT_SLICE_S)):
                return False
        if halt.is_set():
            return False
        with self._lock:
            if self._state == "open":
                self._state = "half-open"
        return True

    def _open(self) -> None:
        """Under the lock."""
        self._state = "open"
        self._retry_at = time.monotonic() + self._backoff_s
        self._metrics.breaker_open.set(1)
        log.error(
            "inference is failing on known-good input; not answering, partitions rewound",
            backoff_s=self._backoff_s,
            error=self.last_error,
        )
