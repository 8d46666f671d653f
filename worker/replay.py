"""Replay: re-score a stretch of the input topic with a chosen model version, into a named topic.

A replay is a batch job beside the live stream, not a member of it: it reads the partitions
it is given without a consumer group (``read_committed``), so the live group's offsets and
assignment are never touched, and it stops at offsets fixed when it starts, so it ends even
while new articles keep arriving. Each article gets a prediction on ``output_topic``, or a
dead letter with the reason on ``dlq_topic``, built exactly as the live worker builds them
(the same decoding, scorer and result schema); ``worker_id`` names the replay.

The range is given per partition as ``[start, stop)`` offsets (:func:`spans_by_offsets`), or
by record time (:func:`spans_by_time`: from the first record at or after ``since`` to the
first at or after ``until``). Everything it sends is acknowledged by the broker before
:func:`replay` returns; a send the broker refuses ends the replay with the error, and the
summary says how far it got.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.errors import TagstreamError
from common.logging import get_logger
from common.settings import KafkaSettings
from messaging import MessagingError, Producer, Record, TopicPartition
from messaging.admin import Admin
from messaging.consumer import Reader
from worker.decoding import to_items
from worker.inference import Model, Scorer
from worker.items import Polled
from worker.results import Results

log = get_logger("worker.replay")

POLL_MS = 200


class ReplayError(TagstreamError):
    """A replay that cannot start, or could not finish: the message says where it stopped."""


@dataclass(frozen=True)
class Span:
    """The offsets ``[start, stop)`` of one partition to replay."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop:
            raise ValueError(f"a span needs 0 <= start <= stop, not [{self.start}, {self.stop})")

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class ReplaySummary:
    """What a replay did, per kind of outcome."""

    version: int
    spans: dict[TopicPartition, Span]
    read: int = 0
    predicted: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def planned(self) -> int:
        return sum(span.size for span in self.spans.values())


def spans_by_offsets(
    admin: Admin, topic: str, start: Mapping[int, int], stop: Mapping[int, int]
) -> dict[TopicPartition, Span]:
    """Spans for the partitions named in ``start`` or ``stop``; a missing start is the first
    offset still on the broker's log, a missing stop the end of the log as it is now."""
    ends = admin.end_offsets(topic)
    firsts = admin.start_offsets(topic)
    partitions = sorted(set(start) | set(stop)) or sorted(tp.partition for tp in ends)
    spans = {}
    for partition in partitions:
        tp = TopicPartition(topic, partition)
        if tp not in ends:
            raise ReplayError(f"{topic} has no partition {partition}")
        first, end = firsts[tp], ends[tp]
        low = max(start.get(partition, first), first)
        high = min(stop.get(partition, end), end)
        spans[tp] = Span(low, max(low, high))
    return spans


def spans_by_time(
    admin: Admin, topic: str, since: datetime | None, until: datetime | None
) -> dict[TopicPartition, Span]:
    """Per partition: from the first record at or after ``since`` (the log's start when None)
    to the first record at or after ``until`` (the log's end now when None), exclusive."""
    ends = admin.end_offsets(topic)
    firsts = admin.start_offsets(topic)
    lows = admin.offsets_at(topic, _ms(since)) if since is not None else dict(firsts)
    highs = admin.offsets_at(topic, _ms(until)) if until is not None else dict(ends)
    spans = {}
    for tp in sorted(ends):
        low = lows.get(tp)
        high = highs.get(tp)
        low = ends[tp] if low is None else low
        high = ends[tp] if high is None else high
        spans[tp] = Span(low, max(low, high))
    return spans


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class Acks:
    """Counts the broker's answers to a replay's sends; keeps the first failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.error: BaseException | None = None

    def track(self) -> Callable[[BaseException | None], None]:
        with self._lock:
            self.sent += 1

        def done(error: BaseException | None) -> None:
            with self._lock:
                if error is None:
                    self.acked += 1
                elif self.error is None:
                    self.error = error

        return done


def replay(
    kafka: KafkaSettings,
    model: Model,
    spans: Mapping[TopicPartition, Span],
    results: Results,
    *,
    batch_size: int = 64,
    bucket_size: int | None = 64,
    max_body_bytes: int,
    max_message_bytes: int,
    stall_timeout_s: float = 60.0,
    flush_timeout_s: float = 60.0,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Re-score ``spans`` with ``model`` and publish the results; returns once the broker has
    acknowledged all of them. Raises :class:`ReplayError` when a partition brings nothing for
    ``stall_timeout_s`` short of its stop offset, a send is refused, or ``stop`` is set."""
    job = Replay(
        model,
        results,
        Scorer(bucket_size),
        batch_size=batch_size,
        max_body_bytes=max_body_bytes,
        max_message_bytes=max_message_bytes,
    )
    summary = ReplaySummary(model.version, dict(spans))
    todo = {tp: span for tp, span in spans.items() if span.size > 0}
    if not todo:
        return summary
    started = time.monotonic()
    producer = Producer(kafka, client_id=f"{kafka.client_id}-{results.worker_id}")
    reader = Reader(kafka, (), start={tp: span.start for tp, span in todo.items()})
    try:
        job.run(
            reader,
            producer,
            todo,
            summary,
            stop=stop or threading.Event(),
            stall_timeout_s=stall_timeout_s,
        )
        producer.flush(flush_timeout_s)
        job.check_acks(flush_timeout_s)
    except MessagingError as exc:
        raise ReplayError(f"Kafka failed during the replay: {exc}") from exc
    finally:
        summary.seconds = time.monotonic() - started
        reader.close()
        producer.close(timeout_s=5.0)
    log.info(
        "Replay finished.",
        version=summary.version,
        read=summary.read,
        predicted=summary.predicted,
        dead_lettered=sum(summary.dead_lettered.values()),
        seconds=round(summary.seconds, 2),
    )
    return summary


class Replay:
    """One replay's scoring and publishing, batch by batch."""

    def __init__(
        self,
        model: Model,
        results: Results,
        scorer: Scorer,
        *,
        batch_size: int,
        max_body_bytes: int,
        max_message_bytes: int,
    ) -> None:
        self._model = model
        self._results = results
        self._scorer = scorer
        self._max_body_bytes = max_body_bytes
        self._max_message_bytes = max_message_bytes
        self._acks = Acks()
        self.batch_size = batch_size

    def run(
        self,
        reader: Reader,
        producer: Producer,
        todo: dict[TopicPartition, Span],
        summary: ReplaySummary,
        *,
        stop: threading.Event,
        stall_timeout_s: float,
    ) -> None:
        """Read until every partition in ``todo`` reached its stop offset."""
        last_progress = time.monotonic()
        while todo:
            if stop.is_set():
                raise ReplayError(f"stopped after {summary.read} of {summary.planned} records")
            self._raise_refused()
            records = [
                r for r in reader.poll(POLL_MS) if r.tp in todo and r.offset < todo[r.tp].stop
            ]
            if records:
                last_progress = time.monotonic()
            for start in range(0, len(records), self.batch_size):
                self._publish(records[start : start + self.batch_size], producer, summary)
            finished = [tp for tp, span in todo.items() if reader.position(tp) >= span.stop]
            reader.pause(finished)
            for tp in finished:
                del todo[tp]
            if todo and time.monotonic() - last_progress > stall_timeout_s:
                where = ", ".join(
                    f"{tp.topic}-{tp.partition} at {reader.position(tp)} of {span.stop}"
                    for tp, span in sorted(todo.items())
                )
                raise ReplayError(f"no records for {stall_timeout_s:g} s: {where}")

    def check_acks(self, flush_timeout_s: float) -> None:
        """After the flush: every result acknowledged, or the reason it was not."""
        self._raise_refused()
        missing = self._acks.sent - self._acks.acked
        if missing:
            raise ReplayError(
                f"{missing} of {self._acks.sent} results were not acknowledged "
                f"within {flush_timeout_s:g} s"
            )

    def _raise_refused(self) -> None:
        if self._acks.error is not None:
            raise ReplayError(f"the broker refused a result: {self._acks.error}")

    def _publish(self, records: list[Record], producer: Producer, summary: ReplaySummary) -> None:
        now = datetime.now(UTC)
        items = to_items(
            [Polled(r, 0, now) for r in records],
            self._model,
            self._max_body_bytes,
            max_message_bytes=self._max_message_bytes,
        )
        to_score = [i for i in items if i.rejection is None]
        rows = iter(self._scorer.score(self._model, [i.token_ids for i in to_score]).rows)
        classified_at = datetime.now(UTC)
        for item in items:
            if item.rejection is not None:
                out = self._results.rejected(item)
            else:
                row = next(rows)
                out = (
                    self._results.failed(item, row)
                    if isinstance(row, Exception)
                    else self._results.prediction(item, row, self._model, classified_at)
                )
            producer.send(out.topic, out.key, out.value, self._acks.track())
            summary.read += 1
            if out.error_kind is None:
                summary.predicted += 1
            else:
                summary.dead_lettered[out.error_kind] += 1
