"""Results the broker refuses every time, and the bounded way out of rewinding for them.

A result the broker does not acknowledge rewinds its partition (``worker.delivery``), which is
right for a broker away or a leader moving. A record the broker refuses for itself (larger
than its topic's ``max.message.bytes``, a topic this worker may not write) would be refused
again after every rewind, for ever, while the worker looked healthy. So refusals are counted
per source offset, across rewinds, and each count picks what is sent for that offset next:

    refusals 0 .. retries     the result as it is (the partition rewound after each)
    then                      a prediction: a dead letter with the original message and why
    then                      a bare dead letter (no payload, no key) saying why
    then                      :class:`RefusedResultError`: the worker stops, exit status 1

A dead letter refused as it is goes straight to the bare one. Only refusals count
(:class:`messaging.RefusedError`, :class:`messaging.FatalError`: too large, invalid, not
authorized); a retriable failure rewinds without climbing. Thread-safe: the producer's
thread reports outcomes, the delivery thread asks what to send.
"""

from __future__ import annotations

import threading

from common.logging import get_logger
from messaging import FatalError, RefusedError, TopicPartition
from worker.errors import WorkerError
from worker.metrics import Metrics
from worker.results import Outgoing, Results

log = get_logger("worker.refusals")

MAX_TRACKED = 10_000
"""Source offsets remembered at most; the oldest is forgotten first (it was answered by
another worker after a rebalance, most likely)."""


class RefusedResultError(WorkerError):
    """The broker refused every form of a result, down to a bare dead letter."""


def is_refusal(error: BaseException) -> bool:
    """Whether the broker refused this record for itself (it would again, every time)."""
    return isinstance(error, (RefusedError, FatalError))


class Refusals:
    """Refusals per source offset, and what to send instead (see the module docstring)."""

    def __init__(self, results: Results, metrics: Metrics, *, retries: int) -> None:
        if retries < 0:
            raise ValueError(f"retries must be at least 0, not {retries}")
        self._results = results
        self._metrics = metrics
        self._retries = retries
        self._lock = threading.Lock()
        self._seen: dict[tuple[TopicPartition, int], tuple[int, str]] = {}

    def refused(self, out: Outgoing, error: BaseException) -> None:
        """The broker refused ``out`` (called from the producer's thread)."""
        key = (out.origin.tp, out.origin.offset)
        with self._lock:
            count, _ = self._seen.pop(key, (0, ""))
            self._seen[key] = (count + 1, f"{type(error).__name__}: {error}")
            if len(self._seen) > MAX_TRACKED:
                del self._seen[next(iter(self._seen))]

    def accepted(self, out: Outgoing) -> None:
        """The broker took the result for ``out``'s offset: forget its refusals."""
        with self._lock:
            if self._seen:
                self._seen.pop((out.origin.tp, out.origin.offset), None)

    def instead(self, out: Outgoing) -> Outgoing:
        """What to send for ``out`` now: itself, or its replacement after refusals.

        Raises :class:`RefusedResultError` when nothing is left to try.
        """
        with self._lock:
            count, reason = self._seen.get((out.origin.tp, out.origin.offset), (0, ""))
        if count <= self._retries:
            return out
        steps = ["bare"] if out.error_kind is not None else ["dead letter", "bare"]
        step = count - self._retries - 1
        origin = out.origin
        where = {
            "topic": origin.tp.topic,
            "partition": origin.tp.partition,
            "offset": origin.offset,
        }
        if step >= len(steps):
            log.error(
                "every form of this result was refused by the broker; stopping",
                refusals=count,
                error=reason,
                **where,
            )
            raise RefusedResultError(
                f"the result for {origin.tp.topic}[{origin.tp.partition}]@{origin.offset} was "
                f"refused {count} times, down to a bare dead letter: {reason}"
            )
        replacement = self._results.refused(
            out, f"{count} times: {reason}", bare=steps[step] == "bare"
        )
        self._metrics.refused_replacements.labels(steps[step]).inc()
        log.warning(
            "result refused by the broker; sending a smaller one instead",
            instead=steps[step],
            refusals=count,
            error=reason,
            **where,
        )
        return replacement
