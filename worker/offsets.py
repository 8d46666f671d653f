"""Which polled offsets are done, per partition, and therefore which offsets may be committed.

The poll thread registers every offset it hands on; the thread that learns a result was
acknowledged by the broker (or committed in a transaction) acks it. The committable offset
of a partition is its *watermark*: the lowest offset still outstanding, or one past the
highest registered when nothing is. Everything below the watermark is acknowledged, so
committing it can never lose a message, whatever order acknowledgements arrive in.

Each assignment of a partition gets a fresh *epoch*. Work carries the epoch it was polled
in; an ack from an older epoch (the partition was revoked, or rewound after a failed
publish) is ignored, and stages drop work whose epoch is no longer current. A failed
publish marks the partition for a rewind: the poll thread seeks back to the watermark and
the partition starts a new epoch, so nothing after the failure can be committed past it.

Exactly-once, a transaction's commit is bracketed by :meth:`OffsetTracker.begin_commit` and
:meth:`OffsetTracker.end_commit`; :meth:`OffsetTracker.revoke` waits (up to its deadline) for
commits in flight over the partitions it drops, so a revoked partition's watermark is never
taken while its offsets may still be committed. No lock is held while the broker is asked
anything: the tracker only counts commits in flight. A partition whose commit outlasts the
revocation's deadline gets no watermark: where it resumes depends on the commit's outcome. If
the same rebalance gives it back, it starts rewinding, its records discarded, until
``end_commit`` tells the outcome: then it is sought to the committed offset, or to its old
watermark if the transaction was aborted.

All methods are thread-safe.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from messaging import TopicPartition


@dataclass
class _Partition:
    epoch: int
    next_offset: int | None = None
    committed: int | None = None
    rewinding: bool = False
    """Its records are discarded until the poll thread seeks it (see ``rewinds``)."""
    outstanding: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)

    def watermark(self) -> int | None:
        while self.heap and self.heap[0] not in self.outstanding:
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else self.next_offset


class OffsetTracker:
    """Outstanding offsets per assigned partition; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._epochs = itertools.count(1)
        self._parts: dict[TopicPartition, _Partition] = {}
        self._committing: dict[TopicPartition, int] = {}
        """Transactions in flight (between begin_commit and end_commit) per partition."""
        self._undecided: dict[TopicPartition, int] = {}
        """Revoked while committing: the watermark to resume at if that transaction aborts."""
        self._decided: dict[TopicPartition, int] = {}
        """Revoked while committing, the outcome known since: where to resume."""
        self.acked = 0
        """Offsets acknowledged so far (all partitions): the commit-every-M-messages clock."""

    # -- assignment -------------------------------------------------------------------------
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Start tracking ``partitions`` (already tracked ones keep their state). One revoked
        while its transaction was committing starts rewinding (see the module docstring)."""
        chosen = {TopicPartition(*tp) for tp in partitions}
        with self._lock:
            for tp in chosen - self._parts.keys():
                state = _Partition(next(self._epochs))
                if tp in self._undecided or tp in self._decided:
                    state.rewinding, state.next_offset = True, self._decided.get(tp)
                self._parts[tp] = state
            for held in (self._undecided, self._decided):
                for tp in held.keys() - chosen:  # another member's now: its commits decide
                    del held[tp]
            self._decided.clear()

    def drop(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Stop tracking ``partitions`` now; returns their watermarks."""
        with self._changed:
            return self._drop({TopicPartition(*tp) for tp in partitions})

    def _drop(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        marks = {}
        for tp in partitions:
            state = self._parts.pop(tp, None)
            mark = state.watermark() if state else None
            if mark is not None:
                marks[tp] = mark
        self._changed.notify_all()
        return marks

    def revoke(
        self, partitions: Iterable[TopicPartition], timeout_s: float, *, resume: bool
    ) -> dict[TopicPartition, int]:
        """Wait up to ``timeout_s`` for transactions committing over ``partitions``, then stop
        tracking them; returns the watermarks of those with no commit in flight. ``resume``:
        the same rebalance may give them back with their fetch positions kept (the eager
        ``range`` assignor), so a partition still committing is held until its outcome."""
        chosen = {TopicPartition(*tp) for tp in partitions}
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while (busy := chosen & self._committing.keys()) and (
                remaining := deadline - time.monotonic()
            ) > 0:
                self._changed.wait(remaining)
            marks = self._drop(chosen)  # under the same lock: no commit can begin meanwhile
            for tp in busy & marks.keys():
                mark = marks.pop(tp)
                if resume:
                    self._undecided[tp] = mark
            return marks

    def partitions(self) -> set[TopicPartition]:
        with self._lock:
            return set(self._parts)

    # -- the life of one offset -------------------------------------------------------------
    def register(self, tp: TopicPartition, offset: int) -> int | None:
        """Mark ``offset`` as handed on; returns its epoch, or None if it must be dropped."""
        with self._lock:
            state = self._parts.get(tp)
            if state is None or state.rewinding:
                return None
            state.outstanding.add(offset)
            heapq.heappush(state.heap, offset)
            state.next_offset = max(offset + 1, state.next_offset or 0)
            return state.epoch

    def ack(self, tp: TopicPartition, epoch: int, offset: int) -> bool:
        """Mark ``offset`` done; False (and no effect) when its epoch is over."""
        with self._changed:
            state = self._parts.get(tp)
            if state is None or state.epoch != epoch:
                return False
            state.outstanding.discard(offset)
            self.acked += 1
            if not state.outstanding:
                self._changed.notify_all()
            return True

    def is_current(self, tp: TopicPartition, epoch: int) -> bool:
        with self._lock:
            return self._current(tp, epoch)

    def _current(self, tp: TopicPartition, epoch: int) -> bool:
        state = self._parts.get(tp)
        return state is not None and state.epoch == epoch and not state.rewinding

    # -- transactions -----------------------------------------------------------------------
    def begin_commit(self, keys: Iterable[tuple[TopicPartition, int]]) -> bool:
        """A transaction over these (partition, epoch) pairs starts committing; False (and
        nothing started) when one of them is no longer current. Pair with :meth:`end_commit`."""
        chosen = set(keys)
        with self._lock:
            if not all(self._current(tp, epoch) for tp, epoch in chosen):
                return False
            for tp in {tp for tp, _ in chosen}:
                self._committing[tp] = self._committing.get(tp, 0) + 1
            return True

    def end_commit(
        self, partitions: Iterable[TopicPartition], committed: dict[TopicPartition, int] | None
    ) -> None:
        """The transaction begun with :meth:`begin_commit` is over: ``committed`` holds the
        offsets it committed ({} when it was aborted; None when its outcome is unknown)."""
        with self._changed:
            for tp in set(partitions):
                left = self._committing.pop(tp, 0) - 1
                if left > 0:
                    self._committing[tp] = left
                if committed is not None and tp in self._undecided:
                    self._decide(tp, committed.get(tp, self._undecided.pop(tp)))
            self._changed.notify_all()

    def _decide(self, tp: TopicPartition, offset: int) -> None:
        state = self._parts.get(tp)
        if state is None:  # not given back yet: assign() starts it there
            self._decided[tp] = offset
        elif state.rewinding and state.watermark() is None:  # given back, waiting
            state.next_offset = offset

    # -- failures and rewinds ---------------------------------------------------------------
    def fail(self, tp: TopicPartition, epoch: int) -> None:
        """A result of ``tp`` was not published: end this epoch and ask for a rewind."""
        with self._changed:
            state = self._parts.get(tp)
            if state is not None and state.epoch == epoch:
                state.rewinding = True
                state.epoch = next(self._epochs)
                self._changed.notify_all()

    def rewinds(self) -> dict[TopicPartition, int]:
        """Partitions waiting for a seek, with the offset to seek to."""
        with self._lock:
            return {
                tp: mark
                for tp, state in self._parts.items()
                if state.rewinding and (mark := state.watermark()) is not None
            }

    def restart(self, tp: TopicPartition, offset: int) -> None:
        """The consumer now reads ``tp`` from ``offset``: a fresh epoch, nothing outstanding."""
        with self._lock:
            state = self._parts.get(tp)
            if state is not None:
                self._parts[tp] = _Partition(
                    next(self._epochs), next_offset=offset, committed=state.committed
                )

    # -- commits ----------------------------------------------------------------------------
    def committable(self) -> dict[TopicPartition, int]:
        """Watermarks that moved past the last committed offset, per partition."""
        with self._lock:
            marks = {}
            for tp, state in self._parts.items():
                mark = None if state.rewinding else state.watermark()
                if mark is not None and mark != state.committed:
                    marks[tp] = mark
            return marks

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Record that ``offsets`` were committed."""
        with self._lock:
            for tp, offset in offsets.items():
                state = self._parts.get(tp)
                if state is not None:
                    state.committed = offset

    def outstanding(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        with self._lock:
            chosen = self._parts if partitions is None else partitions
            return sum(len(self._parts[tp].outstanding) for tp in chosen if tp in self._parts)

    def wait_drained(self, partitions: Iterable[TopicPartition] | None, timeout_s: float) -> bool:
        """Block until nothing of ``partitions`` (None: all) is outstanding; False on timeout.

        Partitions waiting for a rewind count as drained: their work is already discarded.
        """
        chosen = None if partitions is None else list(partitions)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                keys = self._parts if chosen is None else chosen
                if not any(self._busy(tp) for tp in keys):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def _busy(self, tp: TopicPartition) -> bool:
        state = self._parts.get(tp)
        return state is not None and not state.rewinding and bool(state.outstanding)
