"""The loop: one thread owns the consumer; three more decode, score and publish.

    poll thread (owns the consumer)    assembler              scoring         delivery
    poll -> register offsets ─intake─> decode, encode, ─────> score, build ─> publish (or one
    pause while the intake is full     batch                  results         transaction per
    seek rewound partitions                                                   batch), ack
    commit watermarks (at-least-once) <─────────── OffsetTracker <──────────── offsets

Queues between the stages are bounded (``batch_queue`` batches, then one scored batch), so
encoding the next batch and publishing the previous one overlap scoring the current one.
The poll thread never blocks on the other stages: the intake queue has a soft bound (the
consumer's partitions are paused while it is full, and a poll returns at most
``max_poll_records``), so ``poll()`` is called every ``poll_timeout_ms`` and the group
membership never lapses for lack of polling.

Rebalances (the handler methods run on kafka-python's IO thread while the poll thread is
inside ``poll()``): on revocation the worker waits up to ``revoke_timeout_s`` for the work of
the revoked partitions to be published, then stops tracking them and, at-least-once,
commits their watermarks; work still in flight after the deadline is discarded and its
offsets are not committed. Under the eager ``range`` assignor kafka-python keeps a
partition's fetch position when the same rebalance assigns it again, so each reassigned
partition is sought back to its watermark: discarded work is read again, never skipped.
Under ``cooperative-sticky`` a revoked partition can only come back in a later rebalance,
and kafka-python then starts it afresh from the committed offset; a watermark kept from the
revocation would be stale by then (another member may have committed past it), so none is
kept.

Shutdown: :meth:`Pipeline.stop` (from a signal) ends polling and starts one deadline,
``drain_timeout_s`` from the stop, that covers the whole drain however the broker behaves:
the intake gets ``END``; the assembler flushes; scoring and delivery finish, the producer
flushes; the poll thread keeps polling (partitions paused) and committing until everything
is acknowledged or the deadline has passed; then a final commit of what was acknowledged. A
flush that runs out of time is logged and the drain goes on. Every commit, the final one and
the clients' closes (:meth:`Pipeline.time_left`) get what is left of the deadline, at least
``LAST_REQUEST_S``; a revocation during the drain waits no longer than the deadline either.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime

import structlog

from common.logging import get_logger
from messaging import MessagingError, Record, TopicPartition, UndecodableError
from worker.assembler import Assembler, Batches, Intake
from worker.batcher import Batcher
from worker.breaker import Breaker
from worker.delivery import Delivery
from worker.inference import Scorer
from worker.items import Item, Polled
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.results import Results
from worker.scoring import Answers, Scoring
from worker.settings import WorkerSettings
from worker.shadow import Shadow, ShadowSlot
from worker.sink import Sink
from worker.source import Source
from worker.stages import END, Stage
from worker.swap import ModelSlot

log = get_logger("worker.pipeline")

LAG_INTERVAL_S = 5.0
LAST_REQUEST_S = 0.5
"""Once the drain deadline has passed, each request still made (the final commit, leaving
the group, closing the producer) gets this long."""


class Pipeline:
    """Runs one worker's loop until stopped; see the module docstring."""

    def __init__(
        self,
        settings: WorkerSettings,
        source: Source,
        sink: Sink,
        *,
        slot: ModelSlot,
        metrics: Metrics,
        scorer: Scorer,
        worker_id: str,
        halt: threading.Event | None = None,
        shadow: ShadowSlot | None = None,
        shadow_sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.stopping = threading.Event()
        self.deadline: float | None = None
        """When the drain must be over (``time.monotonic``); set by :meth:`stop`."""
        self.halt = halt or threading.Event()
        """Set when the stages must stop at once (the end of a drain, a failure)."""
        self.intake: Intake = queue.Queue()
        self.batches: Batches = queue.Queue(maxsize=settings.batch_queue)
        self._resume: dict[TopicPartition, int] = {}
        self._unread: set[TopicPartition] = set()
        """Assigned partitions not read from since (for the debug log of where reading starts)."""
        self._log_context: dict[str, object] = {}
        self._joining_since: float | None = time.monotonic()
        """When the worker last began waiting for an assignment (None: it has one)."""
        self._left_at = -1
        """The group generation at the last revocation or loss."""
        self.undecodable: dict[TopicPartition, UndecodableError] = {}
        """Partitions held back by a record batch that cannot be decoded."""
        self._last_commit = time.monotonic()
        self._acked_at_commit = 0
        self._last_lag = 0.0
        self.last_step = time.monotonic()
        batcher: Batcher[Item] = Batcher(
            settings.max_batch_size, settings.max_batch_tokens, settings.max_wait_ms / 1000
        )
        results = Results(
            settings.output_topic,
            settings.dlq_topic,
            worker_id,
            include_scores=settings.include_scores,
            max_payload_bytes=settings.dlq_max_payload_bytes,
        )
        assembler = Assembler(
            self.intake,
            self.batches,
            slot,
            batcher=batcher,
            max_body_bytes=settings.max_body_bytes,
            max_message_bytes=settings.max_message_bytes,
            halt=self.halt,
        )
        answers: Answers = queue.Queue(maxsize=1)
        shadowing = None
        if shadow is not None:
            shadowing = Shadow(
                shadow,
                share=settings.shadow_share,
                max_delay_ms=settings.shadow_max_delay_ms,
                results=results,
                sink=shadow_sink,
                topic=settings.shadow_topic,
                metrics=metrics,
                scorer=scorer,
            )
        self.breaker = Breaker(
            window=settings.breaker_window,
            threshold=settings.breaker_threshold,
            backoff_initial_s=settings.breaker_backoff_initial_s,
            backoff_max_s=settings.breaker_backoff_max_s,
            metrics=metrics,
        )
        """Open while the model fails on known-good input (``/healthz`` fails)."""
        self.scoring = Scoring(
            self.batches,
            answers,
            self.tracker,
            results=results,
            scorer=scorer,
            metrics=metrics,
            breaker=self.breaker,
            halt=self.halt,
            shadow=shadowing,
            stopping=self.stopping,
        )
        self.delivery = Delivery(
            answers,
            sink,
            self.tracker,
            results=results,
            metrics=metrics,
            exactly_once=settings.exactly_once,
            membership=source.membership,
            halt=self.halt,
            refused_retries=settings.refused_retries,
        )
        self.stages = [
            Stage("assembler", assembler.run),
            Stage("scoring", self.scoring.run),
            Stage("delivery", self.delivery.run),
        ]

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask for a graceful stop: finish what is in flight, commit, return from run(), all
        within ``drain_timeout_s`` from now."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.settings.drain_timeout_s
        self.stopping.set()

    def time_left(self) -> float | None:
        """How long a request may take now: None (its own timeout) until stopping, then what
        is left of the drain deadline, at least ``LAST_REQUEST_S``."""
        if self.deadline is None:
            return None
        return max(LAST_REQUEST_S, self.deadline - time.monotonic())

    def run(self) -> None:
        """Consume until stopped; raises what a stage died of."""
        self._log_context = structlog.contextvars.get_contextvars()
        self.source.subscribe(self.settings.input_topic, self)
        for stage in self.stages:
            stage.start()
        try:
            while not self.stopping.is_set():
                self.step()
            self.drain()
        finally:
            self.halt.set()
            for stage in self.stages:
                stage.thread.join(timeout=5)
        self._raise_failure()

    def step(self) -> None:
        """One turn of the poll loop."""
        self.last_step = time.monotonic()
        self._raise_failure()
        self._rewind()
        self._backpressure()
        self._hand_on(self.source.poll(self.settings.poll_timeout_ms))
        self._check_undecodable()
        self._check_join()
        self._maybe_commit()
        self._report_lag()

    def drain(self) -> None:
        """Finish in-flight work within the drain deadline, then commit what was acknowledged."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.settings.drain_timeout_s
        deadline = self.deadline
        self.source.pause(self.source.assignment())
        self.intake.put(END)
        last = self.stages[-1].thread
        while last.is_alive() and time.monotonic() < deadline and not self._failed():
            self.last_step = time.monotonic()
            self.source.poll(self.settings.poll_timeout_ms)  # keeps membership; all paused
            self._maybe_commit()
        if not self._failed():
            self._flush(deadline)
        drained = self.tracker.wait_drained(None, max(0.0, deadline - time.monotonic()))
        self._commit()
        left = self.tracker.outstanding()
        self.tracker.drop(self.tracker.partitions())  # close() revokes: nothing left to wait for
        if not drained:
            log.warning(
                "drain deadline passed; unfinished messages will be read again",
                outstanding=left,
                drain_timeout_s=self.settings.drain_timeout_s,
            )

    def _flush(self, deadline: float) -> None:
        """Wait for the producer's outstanding acknowledgements until ``deadline``; those
        still missing then are not committed (the final commit takes only acked offsets)."""
        try:
            self.sink.flush(max(0.0, deadline - time.monotonic()))
        except MessagingError as exc:
            log.warning(
                "producer flush ran out of time; unacknowledged results are not committed",
                error=f"{type(exc).__name__}: {exc}",
            )

    # -- the poll thread's steps ------------------------------------------------------------
    def _hand_on(self, records: list[Record]) -> None:
        if not records:
            return
        now = datetime.now(UTC)
        chunk = []
        if self._unread:
            self._log_first_reads(records)
        for record in records:
            epoch = self.tracker.register(record.tp, record.offset)
            if epoch is not None:
                chunk.append(Polled(record, epoch, now))
        self.metrics.consumed.inc(len(records))
        if len(chunk) < len(records):
            self.metrics.discarded.inc(len(records) - len(chunk))
        if chunk:
            self.intake.put(chunk)

    def _log_first_reads(self, records: list[Record]) -> None:
        """Where each newly assigned partition's reading starts (a debug line each)."""
        for record in records:
            if record.tp in self._unread:
                self._unread.discard(record.tp)
                log.debug(
                    "first record read after assignment",
                    partition=record.tp.partition,
                    offset=record.offset,
                    generation=self.source.membership().generation_id,
                )

    def _backpressure(self) -> None:
        paused = self.source.paused()
        if self.intake.qsize() >= self.settings.intake_chunks:
            more = self.source.assignment() - paused
            if more:
                self.source.pause(more)
                paused |= more
        elif paused:
            self.source.resume(paused)
            paused = set()
        self.metrics.paused_partitions.set(len(paused))

    def _rewind(self) -> None:
        assigned = self.source.assignment()
        for tp, offset in self.tracker.rewinds().items():
            if tp in assigned:
                self.source.seek(tp, offset)
            self.tracker.restart(tp, offset)
            self.metrics.rewinds.inc()
            log.warning(
                "partition rewound after a failed publish or a failing model; read again",
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
            )

    def _maybe_commit(self) -> None:
        if self.settings.exactly_once:
            return
        elapsed_ms = (time.monotonic() - self._last_commit) * 1000
        acked = self.tracker.acked - self._acked_at_commit
        if (
            elapsed_ms >= self.settings.commit_interval_ms
            or acked >= self.settings.commit_every_messages
        ):
            self._commit()

    def _commit(self) -> None:
        """At-least-once: commit every watermark that moved (offsets below it are all acked)."""
        self._last_commit = time.monotonic()
        self._acked_at_commit = self.tracker.acked
        if self.settings.exactly_once:
            return
        offsets = self.tracker.committable()
        if not offsets:
            return
        try:
            self.source.commit(offsets, self.time_left())
        except MessagingError as exc:
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit failed; it is retried", error=f"{type(exc).__name__}: {exc}")
            return
        self.tracker.committed(offsets)
        self.metrics.commits.labels("ok").inc()

    def _check_undecodable(self) -> None:
        """One line and a metric for each partition newly held back by a batch that cannot be
        decoded; it stays paused and uncommitted from that offset, and /healthz fails."""
        held = self.source.undecodable()
        for tp, error in held.items():
            if tp in self.undecodable:
                continue
            self.metrics.undecodable.labels(tp.topic, str(tp.partition)).inc()
            log.error(
                "record batch cannot be decoded; partition paused, offset not committed",
                topic=tp.topic,
                partition=tp.partition,
                offset=error.offset,
                cause=error.cause,
            )
        self.undecodable = held

    def _check_join(self) -> None:
        """Rejoin when an assignment is overdue: a join that never completes must not stall
        the worker forever (seen with kafka-python 3.0.12 on a starved CPU)."""
        since = self._joining_since
        if since is not None and self._rejoined():
            self._joining_since = None
            return
        if since is None or time.monotonic() - since < self.settings.join_timeout_s:
            return
        log.warning(
            "no assignment since joining began; leaving and rejoining the group",
            waited_s=round(time.monotonic() - since, 1),
        )
        self.metrics.rejoins.inc()
        self._joining_since = time.monotonic()
        self.source.resubscribe()

    def _rejoined(self) -> bool:
        """A join completed since the last revocation, even one that assigned nothing new (a
        cooperative rebalance that only took partitions away)."""
        return self.source.stable() and self.source.membership().generation_id != self._left_at

    def _report_lag(self) -> None:
        if time.monotonic() - self._last_lag < LAG_INTERVAL_S:
            return
        self._last_lag = time.monotonic()
        self.metrics.lag.clear()
        for tp, lag in self.source.lag().items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)

    def _failed(self) -> bool:
        return any(stage.failure is not None for stage in self.stages)

    def _raise_failure(self) -> None:
        for stage in self.stages:
            if stage.failure is not None:
                raise stage.failure
            if (
                not stage.thread.is_alive()
                and not self.stopping.is_set()
                and stage.thread.ident is not None
            ):
                raise RuntimeError(f"the {stage.name} thread ended unexpectedly")

    # -- rebalance handler (kafka-python's IO thread, poll thread blocked in poll) ----------
    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        with structlog.contextvars.bound_contextvars(**self._log_context):
            self._on_revoked(partitions)

    def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._joining_since = time.monotonic()
        self._left_at = self.source.membership().generation_id
        self.metrics.rebalances.labels("revoked").inc(len(partitions))
        left_s = self.time_left()
        budget_s = self.settings.revoke_timeout_s if left_s is None else left_s
        deadline = time.monotonic() + min(self.settings.revoke_timeout_s, budget_s)
        drained = self.tracker.wait_drained(partitions, deadline - time.monotonic())
        left = self.tracker.outstanding(partitions)
        marks = self.tracker.revoke(
            partitions,
            max(0.0, deadline - time.monotonic()),
            resume=self.settings.assignor == "range",
        )
        if self.settings.assignor == "range":
            self._resume.update(marks)
        if marks and not self.settings.exactly_once:
            try:
                self.source.commit_nowait(marks)
            except MessagingError as exc:
                log.warning("commit on revocation failed", error=str(exc))
        log.info(
            "partitions revoked",
            partitions=sorted(tp.partition for tp in partitions),
            finished=drained,
            unfinished=left,
        )

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        with structlog.contextvars.bound_contextvars(**self._log_context):
            self._on_lost(partitions)

    def _on_lost(self, partitions: set[TopicPartition]) -> None:
        self._joining_since = time.monotonic()
        self._left_at = self.source.membership().generation_id
        self.metrics.rebalances.labels("lost").inc(len(partitions))
        left = self.tracker.outstanding(partitions)
        # No resume marks: the group went on without this member, so another one may have
        # predicted and committed past them. kafka-python drops the state of lost partitions,
        # so if they come back they start from the committed offsets, the only truth left.
        self.tracker.drop(partitions)
        for tp in partitions:
            self._resume.pop(tp, None)
        log.warning(
            "partitions lost", partitions=sorted(tp.partition for tp in partitions), unfinished=left
        )

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        with structlog.contextvars.bound_contextvars(**self._log_context):
            self._on_assigned(partitions)

    def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        self._joining_since = None
        self.metrics.rebalances.labels("assigned").inc(len(partitions))
        self.tracker.assign(partitions)
        self._unread = set(partitions)
        for tp in partitions & self._resume.keys():
            self.source.seek(tp, self._resume[tp])
        self._resume.clear()
        log.info(
            "partitions assigned",
            partitions=sorted(tp.partition for tp in partitions),
            generation=self.source.membership().generation_id,
        )
