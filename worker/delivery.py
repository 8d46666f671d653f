"""The delivery thread: publishes each scored batch, in order, and acks its offsets.

Commit order is the correctness story, and it is written down here where it happens:

at-least-once
    every result is sent; its acknowledgement (on the producer's thread) acks the source
    offset in the :class:`~worker.offsets.OffsetTracker`; the poll thread commits watermarks,
    so an offset is committed only after every result up to it was acknowledged. A result
    the broker refuses marks its partition for a rewind instead.

exactly-once
    one transaction per batch: begin -> send every result -> send the batch's offsets
    (highest + 1 per partition) with the consumer's group membership -> commit. The offsets are
    acked only after the commit. Any failure aborts, and the batch's partitions are rewound.
    The send-offsets-and-commit step is announced to the tracker (``begin_commit`` /
    ``end_commit``) and revocation waits for it, up to ``revoke_timeout_s``, before it takes
    the watermarks, so a revoked partition's offsets are never committed after its watermark
    was taken; a partition whose commit outlasts that wait gets no watermark, and if it comes
    back it waits for the outcome (see :mod:`worker.offsets`). No lock is held across a
    request to the broker, and every transactional request has a deadline
    (``transaction_timeout_s``, cut short when the worker halts). The broker fences a commit
    from a stale generation (KIP-447: the group metadata goes with the offsets), and another
    member, reading ``read_committed``, fetches committed offsets with ``require_stable``, so
    it waits for a transaction still open over its new partitions.
    Batches are delivered one at a time by this one thread, so a transaction never commits
    offsets past an earlier batch that has not committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from common.logging import get_logger
from messaging import DeadlineError, GroupMembership, MessagingError, TopicPartition
from messaging import FencedError as ClientFencedError
from messaging.producer import Done
from worker.errors import FencedError, WorkerError
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.refusals import Refusals, is_refusal
from worker.results import Outgoing, Results
from worker.scoring import Answered, Answers
from worker.sink import Sink
from worker.stages import _End, get

log = get_logger("worker.delivery")


class StaleBatchError(Exception):
    """A partition of this batch was revoked or rewound while it was delivered."""


class TransactionStuckError(WorkerError):
    """The broker did not answer a transaction's commit in time: its outcome is unknown.

    The worker stops; the broker aborts the transaction when its timeout passes, or the next
    instance with the same transactional id fences and aborts it.
    """


class Delivery:
    """Publishes scored batches and acknowledges their offsets (see the module docstring)."""

    def __init__(
        self,
        answers: Answers,
        sink: Sink,
        tracker: OffsetTracker,
        *,
        results: Results,
        metrics: Metrics,
        exactly_once: bool,
        membership: Callable[[], GroupMembership],
        halt: threading.Event,
        refused_retries: int = 2,
    ) -> None:
        self._refusals = Refusals(results, metrics, retries=refused_retries)
        self._answers = answers
        self._sink = sink
        self._tracker = tracker
        self._results = results
        self._metrics = metrics
        self._exactly_once = exactly_once
        self._membership = membership
        self._halt = halt
        self.busy_since: float | None = None
        """When the delivery running now started (None between batches)."""

    def run(self) -> None:
        while not self._halt.is_set():
            answered = get(self._answers, self._halt)
            if answered is None:
                continue
            if isinstance(answered, _End):
                return
            self.busy_since = time.monotonic()
            try:
                self.deliver(answered)
            finally:
                self.busy_since = None

    def deliver(self, answered: Answered) -> None:
        with structlog.contextvars.bound_contextvars(**answered.context):
            if self._exactly_once:
                self._publish_transaction(answered.outgoing)
            else:
                self._publish(answered.outgoing)
            self._observe(answered)

    # -- at-least-once ----------------------------------------------------------------------
    def _publish(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            try:
                self._send(out, self._on_done)
            except DeadlineError as exc:  # no metadata or no buffer space in max_block_ms
                self._on_done(out)(exc)

    def _send(self, out: Outgoing, on_done: Callable[[Outgoing], Done] | None) -> Outgoing:
        """Send ``out``, or what replaces it after the broker refused it before; a record the
        client refuses outright (too large, say) is replaced by a bare dead letter, so one odd
        message can never block its partition."""
        out = self._refusals.instead(out)
        try:
            self._sink.send(out.topic, out.key, out.value, on_done(out) if on_done else None)
            return out
        except DeadlineError:
            raise
        except MessagingError as exc:
            bare = self._results.unpublishable(out, exc)
            log.warning(
                "result refused by the client; sending a bare dead letter",
                offset=out.origin.offset,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._sink.send(bare.topic, bare.key, bare.value, on_done(bare) if on_done else None)
            return bare

    def _on_done(self, out: Outgoing) -> Done:
        def done(error: BaseException | None) -> None:
            origin = out.origin
            if error is None:
                self._refusals.accepted(out)
                if self._tracker.ack(origin.tp, origin.epoch, origin.offset):
                    self._count(out)
                return
            if is_refusal(error):
                self._refusals.refused(out, error)
            self._metrics.publish_failures.inc()
            self._tracker.fail(origin.tp, origin.epoch)
            log.warning(
                "result not acknowledged; the partition will be rewound",
                topic=origin.tp.topic,
                partition=origin.tp.partition,
                offset=origin.offset,
                error=f"{type(error).__name__}: {error}",
            )

        return done

    # -- exactly-once -----------------------------------------------------------------------
    def _publish_transaction(self, outgoing: list[Outgoing]) -> None:
        offsets = next_offsets(outgoing)
        try:
            self._sink.begin()
            outgoing = [self._send(out, self._on_sent_in_transaction) for out in outgoing]
            self._commit_transaction(outgoing, offsets)
        except ClientFencedError as exc:
            raise FencedError(f"this worker was fenced by a newer instance: {exc}") from exc
        except (MessagingError, StaleBatchError) as exc:
            self._abort(outgoing, exc)
            return
        except TransactionStuckError:
            if not self._halt.is_set():
                raise
            log.warning(
                "the worker is stopping with a transaction's commit unanswered; the "
                "broker or the next instance with this transactional id resolves it"
            )
            return
        self._metrics.transactions.labels("committed").inc()
        for out in outgoing:
            self._count(out)

    def _commit_transaction(
        self, outgoing: list[Outgoing], offsets: dict[TopicPartition, int]
    ) -> None:
        """Send the offsets and commit, the tracker told that a commit is in flight."""
        keys = {(o.origin.tp, o.origin.epoch) for o in outgoing}
        if not self._tracker.begin_commit(keys):
            raise StaleBatchError("a partition was revoked or rewound during the batch")
        committed: dict[TopicPartition, int] | None = None  # the outcome unknown
        try:
            membership = self._membership()
            self._sink.commit_offsets(offsets, membership)
            self._commit()
            log.debug(
                "transaction committed",
                generation=membership.generation_id,
                offsets={tp.partition: offset for tp, offset in sorted(offsets.items())},
            )
            for out in outgoing:
                self._tracker.ack(out.origin.tp, out.origin.epoch, out.origin.offset)
            committed = offsets
        except MessagingError:
            for key in keys:  # before revocation can take a watermark: this batch is undone
                self._tracker.fail(*key)
            committed = {}  # refused, so never committed: it is aborted next
            raise
        finally:
            self._tracker.end_commit((tp for tp, _ in keys), committed)

    def _on_sent_in_transaction(self, out: Outgoing) -> Done:
        """Only counts refusals: the transaction's commit or abort decides the rest."""

        def done(error: BaseException | None) -> None:
            if error is None:
                self._refusals.accepted(out)
            elif is_refusal(error):
                self._refusals.refused(out, error)

        return done

    def _commit(self) -> None:
        try:
            self._sink.commit()
        except DeadlineError as exc:
            raise TransactionStuckError(f"committing a transaction: {exc}") from exc

    def _abort(self, outgoing: list[Outgoing], cause: Exception) -> None:
        try:
            self._sink.abort()
        except ClientFencedError as exc:
            raise FencedError(f"this worker was fenced by a newer instance: {exc}") from exc
        except DeadlineError as exc:
            if not self._halt.is_set():
                raise
            log.warning(
                "the worker is stopping before an abort was answered; the broker or the next "
                "instance with this transactional id aborts the transaction",
                error=f"{type(exc).__name__}: {exc}",
            )
        self._metrics.transactions.labels("aborted").inc()
        for key in {(o.origin.tp, o.origin.epoch) for o in outgoing}:
            self._tracker.fail(*key)
        log.warning(
            "transaction aborted; its partitions will be rewound",
            error=f"{type(cause).__name__}: {cause}",
        )

    # -- bookkeeping ------------------------------------------------------------------------
    def _count(self, out: Outgoing) -> None:
        if out.error_kind is None:
            self._metrics.predictions.inc()
        else:
            self._metrics.dead_letters.labels(out.error_kind).inc()
        self._metrics.end_to_end_seconds.observe(
            max(0.0, time.time() - out.origin.timestamp_ms / 1000)
        )

    def _observe(self, answered: Answered) -> None:
        work, outgoing, scored = answered.work, answered.outgoing, answered.scored
        m = self._metrics
        m.batches.labels(work.batch.reason).inc()
        m.batch_articles.observe(len(outgoing))
        if scored.rows:
            m.batch_padded_tokens.observe(scored.padded_tokens)
            m.padding_ratio.observe(scored.padding_ratio)
            m.inference_seconds.observe(scored.seconds)
        dead = sum(1 for o in outgoing if o.error_kind is not None)
        log.info(
            "batch",
            articles=len(outgoing) - dead,
            dead_letters=dead,
            reason=work.batch.reason,
            padded_tokens=scored.padded_tokens,
            padding_ratio=round(scored.padding_ratio, 4),
            inference_ms=round(scored.seconds * 1000, 2),
        )


def next_offsets(outgoing: list[Outgoing]) -> dict[TopicPartition, int]:
    """Per partition, one past the highest source offset: what the transaction commits."""
    offsets: dict[TopicPartition, int] = {}
    for out in outgoing:
        tp = out.origin.tp
        offsets[tp] = max(offsets.get(tp, 0), out.origin.offset + 1)
    return offsets
