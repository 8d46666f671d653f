"""Small in-memory stand-ins for the worker's loop tests: a model, a consumer, a producer.

They keep the contracts the loop relies on and nothing more: the source hands out records
per partition from a position, honours pause/seek/commit and calls the rebalance handler;
the sink acknowledges each send through its callback, late, out of order and from a thread
of its own (or refuses chosen ones).
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np

from messaging import GroupMembership, RebalanceHandler, Record, TopicPartition
from messaging.errors import DeadlineError, RefusedError, RetriableError, UndecodableError
from messaging.producer import Done

POISON = "POISON"
POISON_ID = 999


class FakeModel:
    """Token id = word length (the word POISON is id 999, which ``scores`` refuses)."""

    def __init__(self, version: int = 1, labels: Sequence[str] = ("earn", "acq")) -> None:
        self.version = version
        self.labels = list(labels)
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [
            [POISON_ID if w == POISON else min(len(w), 50) for w in t.split()][:64] for t in texts
        ]

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self.calls.append(len(token_ids))
        if any(POISON_ID in ids for ids in token_ids):
            raise RuntimeError("the model cannot digest this article")
        return np.array(
            [[0.9, 0.2 + 0.01 * (len(ids) % 10)] for ids in token_ids], dtype=np.float32
        )

    def decide(self, scores_row: np.ndarray) -> list[tuple[str, float]]:
        return [(n, float(s)) for n, s in zip(self.labels, scores_row, strict=True) if s >= 0.5]

    def decide_rows(self, scores: np.ndarray) -> list[list[tuple[str, float]]]:
        return [self.decide(row) for row in scores]

    def warm_up(self) -> None:
        self.scores([[1, 2, 3]])


def article(i: int, body: str = "profit rose sharply this quarter") -> bytes:
    return json.dumps({"id": f"a{i}", "title": f"title {i}", "body": body}).encode()


class FakeSource:
    """One topic's partitions in memory; assigns them all on the first poll."""

    def __init__(
        self,
        topic: str,
        partitions: dict[int, list[bytes | None]],
        *,
        lose_first_join: bool = False,
    ) -> None:
        self.lose_first_join = lose_first_join
        self.topic = topic
        self.data = {TopicPartition(topic, p): list(values) for p, values in partitions.items()}
        self.positions = dict.fromkeys(self.data, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.paused_set: set[TopicPartition] = set()
        self.handler: RebalanceHandler | None = None
        self.pause_calls = 0
        self.resubscribed = 0
        self.max_records = 50
        self._pending: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    # -- test controls -------------------------------------------------------------------
    def append(self, partition: int, values: Iterable[bytes | None]) -> None:
        with self._lock:
            self.data[TopicPartition(self.topic, partition)].extend(values)

    def rebalance(self, revoke: set[TopicPartition], assign: set[TopicPartition]) -> None:
        """On the next poll: revoke, then assign. Like kafka-python, a partition held before
        and after keeps its fetch position; a newly assigned one starts from its commit."""

        def run() -> None:
            assert self.handler is not None
            before = set(self.assigned)
            self.handler.on_revoked(revoke)
            for tp in assign - before:
                self.positions[tp] = self.committed.get(tp, 0)
            self.assigned = assign
            self.handler.on_assigned(assign)

        with self._lock:
            self._pending.append(run)

    def end(self, tp: TopicPartition) -> int:
        return len(self.data[tp])

    # -- Source --------------------------------------------------------------------------
    def subscribe(self, topic: str, handler: RebalanceHandler) -> None:
        assert topic == self.topic
        self.handler = handler
        if not self.lose_first_join:  # like the kafka-python stall the worker guards against
            self.rebalance(set(), set(self.data))

    def resubscribe(self) -> None:
        self.resubscribed += 1
        self.rebalance(set(self.assigned), set(self.data))

    def poll(self, timeout_ms: int) -> list[Record]:
        with self._lock:
            pending, self._pending = self._pending, []
        for run in pending:
            run()
        records = self._take()
        if not records:
            threading.Event().wait(min(timeout_ms, 5) / 1000)
        return records

    def _take(self) -> list[Record]:
        records: list[Record] = []
        with self._lock:
            for tp in sorted(self.assigned - self.paused_set):
                start = self.positions[tp]
                values = self.data[tp][start : start + self.max_records - len(records)]
                records += [
                    Record(tp.topic, tp.partition, start + i, b"k", v, 1_700_000_000_000)
                    for i, v in enumerate(values)
                ]
                self.positions[tp] = start + len(values)
        return records

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.pause_calls += 1
        self.paused_set |= set(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.paused_set -= set(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def commit(self, offsets: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        self.committed.update(offsets)

    def commit_nowait(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def membership(self) -> GroupMembership:
        return GroupMembership("group", 1, "member-1", None)

    def stable(self) -> bool:
        return bool(self.assigned)

    def undecodable(self) -> dict[TopicPartition, UndecodableError]:
        return {}

    def lag(self) -> dict[TopicPartition, int]:
        return {tp: len(self.data[tp]) - self.positions[tp] for tp in self.assigned}

    def close(self, timeout_s: float | None = None) -> None:
        """Nothing to release."""


class AtLeastOnceOnly:
    """The transactional half of a sink, which an at-least-once fake must never be asked for."""

    def begin(self) -> None:
        raise AssertionError("at-least-once only")

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None:
        raise AssertionError("at-least-once only")

    def commit(self) -> None:
        raise AssertionError("at-least-once only")

    def abort(self) -> None:
        raise AssertionError("at-least-once only")


class FakeSink(AtLeastOnceOnly):
    """A producer whose acknowledgements come late and out of order, from a thread of its own,
    as the real producer's come from its sender thread (stricter than the real one: across
    and within partitions alike). It refuses the keys ``refuse`` names once each (a
    retriable failure), and every time a record longer than ``max_bytes`` says for its topic
    (as a broker refuses one over ``max.message.bytes``). A record counts as ``sent`` once it
    is acknowledged."""

    def __init__(
        self,
        refuse: set[bytes] | None = None,
        *,
        max_bytes: dict[str, int] | None = None,
        seed: int = 0,
    ) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.refuse = set(refuse or ())
        self.refused: list[bytes] = []
        self.too_large: list[tuple[str, int]] = []
        self.max_bytes = dict(max_bytes or {})
        self._rng = random.Random(seed)
        self._pending: list[Callable[[], None]] = []
        self._running = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._acknowledge, name="fake-acks", daemon=True)
        self._thread.start()

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None:
        with self._changed:
            error: BaseException | None = None
            if key is not None and key in self.refuse:
                self.refuse.discard(key)
                self.refused.append(key)
                error = RetriableError("broker said no")
            elif len(value) > self.max_bytes.get(topic, len(value)):
                self.too_large.append((topic, len(value)))
                error = RefusedError(
                    f"[Error 10] MessageSizeTooLargeError: {len(value)} bytes over the limit"
                )
            self._pending.append(partial(self._done, (topic, key, value), on_done, error))
            self._changed.notify_all()

    def _done(
        self,
        record: tuple[str, bytes | None, bytes],
        on_done: Done | None,
        error: BaseException | None,
    ) -> None:
        if error is None:
            with self._changed:
                self.sent.append(record)
        if on_done is not None:
            on_done(error)

    def _acknowledge(self) -> None:
        """Forever: wait a little, then answer a random share of what is pending, shuffled."""
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
            threading.Event().wait(self._rng.uniform(0, 0.003))
            with self._changed:
                self._rng.shuffle(self._pending)
                cut = self._rng.randint(1, len(self._pending))
                now, self._pending = self._pending[:cut], self._pending[cut:]
                self._running += 1
            try:
                for answer in now:
                    answer()
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self._changed:
            return [json.loads(v) for t, _, v in self.sent if t == topic]

    def flush(self, timeout_s: float) -> None:
        """Wait until every send so far was answered (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._pending or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)


class LateSink(AtLeastOnceOnly):
    """Answers like the real producer: from a thread of its own, ``delay_s`` after each send,
    and only the first ``answered`` sends until :meth:`release` (a broker that stops answering
    mid-stream). ``flush`` waits for every answer with one deadline and raises DeadlineError
    past it, as :meth:`messaging.Producer.flush` does."""

    def __init__(self, answered: int, delay_s: float = 0.01) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self._lock = threading.Lock()
        self.answered, self.delay_s = answered, delay_s
        self.sends = 0
        self._queue: queue.Queue[tuple[tuple[str, bytes | None, bytes], Done | None]] = (
            queue.Queue()
        )
        self._held: list[tuple[tuple[str, bytes | None, bytes], Done | None]] = []
        self._pending = 0
        self._released = False
        self._changed = threading.Condition()
        threading.Thread(target=self._answer, name="late-sink", daemon=True).start()

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None:
        with self._changed:
            self.sends += 1
            self._pending += 1
        self._queue.put(((topic, key, value), on_done))

    def release(self) -> None:
        """The broker answers again: every held send is acknowledged."""
        with self._changed:
            self._released = True
            held, self._held = self._held, []
        for record, on_done in held:
            self._done(record, on_done)

    def _answer(self) -> None:
        answered = 0
        while True:
            record, on_done = self._queue.get()
            threading.Event().wait(self.delay_s)
            with self._changed:
                hold = answered >= self.answered and not self._released
                if hold:
                    self._held.append((record, on_done))
            if not hold:
                answered += 1
                self._done(record, on_done)

    def _done(self, record: tuple[str, bytes | None, bytes], on_done: Done | None) -> None:
        with self._lock:
            self.sent.append(record)
        if on_done is not None:
            on_done(None)
        with self._changed:
            self._pending -= 1
            self._changed.notify_all()

    def flush(self, timeout_s: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._pending == 0, timeout_s):
                raise DeadlineError(f"flushing: {self._pending} records without an answer")

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(v) for t, _, v in self.sent if t == topic]

    def close(self, timeout_s: float) -> None:
        """Nothing to release."""
