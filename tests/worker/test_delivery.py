"""Exactly-once delivery: what goes into each transaction, and what a failure does.

The sink here records the transactional calls the delivery thread makes; the same path runs
against the real broker in test_worker_kafka.py (SIGKILL, read_committed).
"""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from messaging import (
    DeadlineError,
    GroupMembership,
    MessagingError,
    RetriableError,
    TopicPartition,
)
from messaging import FencedError as ClientFencedError
from messaging.producer import Done
from schemas import Article
from tests.worker.fakes import FakeModel
from worker.assembler import ModelBatch
from worker.batcher import Batch
from worker.delivery import Delivery, TransactionStuckError
from worker.errors import FencedError
from worker.inference import Scored
from worker.items import Item, Origin
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.results import Results
from worker.scoring import Answered

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)
NOW = datetime(2025, 1, 1, tzinfo=UTC)


class TransactionLog:
    """A transactional sink that records its calls; ``fail`` makes one call raise. Like the
    real producer, it refuses to commit offsets with a membership that has no generation."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail or {}

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail.pop(name)

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None:
        self._call("send", topic)
        if on_done is not None:  # inside a transaction it only hears of refusals
            on_done(None)

    def begin(self) -> None:
        self._call("begin")

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None:
        if not membership.is_member:
            raise RetriableError("the consumer's group membership was reset; not committing")
        self._call("commit_offsets", offsets, membership)

    def commit(self) -> None:
        self._call("commit")

    def abort(self) -> None:
        self._call("abort")

    def flush(self, timeout_s: float) -> None:
        """Nothing is buffered."""

    def close(self, timeout_s: float) -> None:
        """Nothing to release."""


MEMBER = GroupMembership("workers", 7, "member-1", None)


def setup(
    sink: TransactionLog,
    membership: GroupMembership = MEMBER,
    halt: threading.Event | None = None,
) -> tuple[Delivery, OffsetTracker, Answered]:
    tracker = OffsetTracker()
    tracker.assign([P0, P1])
    results = Results("out", "dlq", "w")
    model = FakeModel()
    items, outgoing = [], []
    for tp, offset in ((P0, 5), (P0, 6), (P1, 2)):
        epoch = tracker.register(tp, offset)
        assert epoch is not None
        origin = Origin(tp, offset, epoch, b"k", 0, NOW)
        article = Article(id=f"a{offset}", body="text")
        item = Item(origin, b"{}", article=article, token_ids=(1, 2))
        items.append(item)
        outgoing.append(results.prediction(item, np.array([0.9, 0.1]), model, NOW))
    work = ModelBatch(1, Batch(tuple(items), (2, 2, 2), 0.0, "size"), model)
    answered = Answered(work, outgoing, Scored([], 6, 6, 0.01), {"batch_id": 1})
    delivery = Delivery(
        queue.Queue(),
        sink,
        tracker,
        results=results,
        metrics=Metrics(),
        exactly_once=True,
        membership=lambda: membership,
        halt=halt or threading.Event(),
    )
    return delivery, tracker, answered


def test_one_transaction_holds_the_batch_results_and_its_next_offsets() -> None:
    sink = TransactionLog()
    delivery, tracker, answered = setup(sink)
    delivery.deliver(answered)
    assert sink.calls == [
        ("begin",),
        ("send", "out"),
        ("send", "out"),
        ("send", "out"),
        ("commit_offsets", {P0: 7, P1: 3}, MEMBER),
        ("commit",),
    ]
    assert tracker.outstanding() == 0
    assert tracker.committable() == {P0: 7, P1: 3}


def test_a_failed_commit_aborts_and_rewinds_the_partitions_of_the_batch() -> None:
    sink = TransactionLog(fail={"commit": MessagingError("coordinator moved")})
    delivery, tracker, answered = setup(sink)
    delivery.deliver(answered)
    assert sink.calls[-1] == ("abort",)
    assert tracker.rewinds() == {P0: 5, P1: 2}


def test_a_batch_whose_partition_was_revoked_meanwhile_is_aborted_not_committed() -> None:
    sink = TransactionLog()
    delivery, tracker, answered = setup(sink)
    tracker.drop([P1])
    delivery.deliver(answered)
    assert [c[0] for c in sink.calls] == ["begin", "send", "send", "send", "abort"]
    assert tracker.rewinds() == {P0: 5}


def test_no_offsets_are_committed_for_a_consumer_whose_membership_was_reset() -> None:
    """A frozen worker that finds its membership gone resets to no generation; the broker
    does not fence a transactional offset commit that carries none, so such a batch (whose
    partitions another member may have committed past meanwhile) must be aborted."""
    sink = TransactionLog()
    delivery, tracker, answered = setup(sink, GroupMembership("workers", -1, "", None))
    delivery.deliver(answered)
    assert [c[0] for c in sink.calls] == ["begin", "send", "send", "send", "abort"]
    assert tracker.rewinds() == {P0: 5, P1: 2}


def test_a_fenced_producer_stops_the_worker() -> None:
    sink = TransactionLog(fail={"commit_offsets": ClientFencedError("newer epoch")})
    delivery, _, answered = setup(sink)
    with pytest.raises(FencedError, match="fenced"):
        delivery.deliver(answered)


class Unanswered(TransactionLog):
    """Like the real producer while the broker does not answer: ``commit_offsets`` waits
    (until the test answers for the broker), as kafka-python does within its deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.answer = threading.Event()

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None:
        self.waiting.set()
        assert self.answer.wait(30)
        super().commit_offsets(offsets, membership)


def test_a_revocation_is_not_held_up_by_a_commit_the_broker_does_not_answer() -> None:
    """No lock is held across the request: the revocation takes its partitions at its own
    deadline, without watermarks (the commit's outcome is unknown); given back, they resume
    where the late commit's outcome says."""
    sink = Unanswered()
    delivery, tracker, answered = setup(sink)
    delivering = threading.Thread(target=delivery.deliver, args=(answered,), daemon=True)
    delivering.start()
    assert sink.waiting.wait(10)
    dropped: list[object] = []
    revoking = threading.Thread(
        target=lambda: dropped.append(tracker.revoke([P0, P1], timeout_s=0.1, resume=True)),
        daemon=True,
    )
    revoking.start()
    revoking.join(10)
    try:
        assert not revoking.is_alive(), "the revocation waited for the broker's answer"
        assert dropped == [{}]
        tracker.assign([P0, P1])
    finally:
        sink.answer.set()
        delivering.join(10)
    assert not delivering.is_alive()
    assert sink.calls[-1] == ("commit",)
    assert tracker.acked == 0
    assert tracker.rewinds() == {P0: 7, P1: 3}


def test_a_transaction_given_up_because_the_worker_halts_ends_the_delivery_quietly() -> None:
    """At the drain deadline the producer's waits end at once (DeadlineError); the broker
    or the next instance aborts the transaction, and the stage ends without a failure."""
    given_up = DeadlineError("sending the offsets to the transaction: given up")
    sink = TransactionLog(
        fail={"commit_offsets": given_up, "abort": DeadlineError("aborting: given up")}
    )
    halt = threading.Event()
    halt.set()
    delivery, tracker, answered = setup(sink, halt=halt)
    delivery.deliver(answered)
    assert [c[0] for c in sink.calls][-1] == "abort"
    assert tracker.rewinds() == {P0: 5, P1: 2}
    assert tracker.acked == 0


def test_a_commit_without_an_answer_stops_the_worker_unless_it_is_already_stopping() -> None:
    sink = TransactionLog(fail={"commit": DeadlineError("no answer within 30 s")})
    delivery, tracker, answered = setup(sink)
    with pytest.raises(TransactionStuckError):
        delivery.deliver(answered)
    halt = threading.Event()
    halt.set()
    sink = TransactionLog(fail={"commit": DeadlineError("given up, the worker is stopping")})
    delivery, tracker, answered = setup(sink, halt=halt)
    delivery.deliver(answered)
    assert tracker.acked == 0
