"""A consumer-group member with explicit commits: kafka-python's ``KafkaConsumer``, wrapped.

kafka-python's consumer is not thread-safe: one thread owns a :class:`Consumer`. The
exceptions are marked: :meth:`Consumer.membership` is a locked snapshot (documented as safe to
call at any time), and the rebalance handler runs on kafka-python's own IO thread while the
owning thread is blocked inside :meth:`Consumer.poll`, where only non-blocking calls are
allowed (:meth:`Consumer.seek`, :meth:`Consumer.commit_nowait`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka import errors as kafka_errors
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.base import MemberState
from kafka.structs import OffsetAndMetadata

from common.logging import get_logger
from common.settings import KafkaSettings
from messaging.config import client_config
from messaging.errors import RetriableError, UndecodableError, translate, translated
from messaging.types import GroupMembership, Record, TopicPartition

log = get_logger("messaging.consumer")

Assignor = Literal["range", "cooperative-sticky"]
ASSIGNORS = {"range": RangePartitionAssignor, "cooperative-sticky": CooperativeStickyAssignor}
UNDECODABLE = (kafka_errors.UnsupportedCodecError, kafka_errors.CorruptRecordError)
LAG_TIMEOUT_MS = 2_000
"""How long :meth:`Consumer.lag` waits for the broker's end or committed offsets."""


class RebalanceHandler(Protocol):
    """Told about assignment changes; runs on the consumer's IO thread.

    Under the ``range`` assignor every rebalance revokes everything, then assigns the new
    set; under ``cooperative-sticky`` only the partitions that move are revoked or assigned.
    """

    def on_assigned(self, partitions: set[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    def on_lost(self, partitions: set[TopicPartition]) -> None: ...


def ours(partitions: Iterable[Any]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


def kafka_tp(tp: TopicPartition) -> Any:
    """kafka-python checks the class of the partitions it is given, not only their fields."""
    return KafkaTopicPartition(tp.topic, tp.partition)


def kafka_offsets(offsets: dict[TopicPartition, int]) -> dict[Any, Any]:
    return {kafka_tp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, handler: RebalanceHandler) -> None:
        self.handler = handler

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self.handler.on_revoked(ours(revoked))

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        self.handler.on_assigned(ours(assigned))

    def on_partitions_lost(self, lost: Iterable[Any]) -> None:
        self.handler.on_lost(ours(lost))


class Consumer:
    """A group member reading one topic, ``read_committed``, with manual offset commits."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        client_id: str | None = None,
        group_instance_id: str | None = None,
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        max_poll_records: int = 500,
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        assignor: Assignor = "range",
    ) -> None:
        config = client_config(kafka) | {
            "client_id": client_id or kafka.client_id,
            "group_id": group_id,
            "group_instance_id": group_instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            "isolation_level": "read_committed",
            "max_poll_records": max_poll_records,
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "partition_assignment_strategy": (ASSIGNORS[assignor],),
        }
        with translated():
            self._consumer = KafkaConsumer(**config)
        self._commit_timeout_ms = min(session_timeout_ms, 10_000)
        self._last_offsets: dict[TopicPartition, int] = {}
        self._undecodable: dict[TopicPartition, UndecodableError] = {}
        self._poll_failing = False
        self._topic = ""
        self._listener: _Listener | None = None

    # -- membership -------------------------------------------------------------------------
    def subscribe(self, topic: str, handler: RebalanceHandler) -> None:
        # With the topic's metadata known before the first JoinGroup, the leader assigns
        # partitions in the first round instead of a second one.
        with translated():
            self._consumer.partitions_for_topic(topic)
            self._topic, self._listener = topic, _Listener(handler)
            self._consumer.subscribe([topic], listener=self._listener)

    def resubscribe(self) -> None:
        """Leave the group and join again: the way out of a join that never completes."""
        with translated():
            self._consumer.unsubscribe()
            self._consumer.subscribe([self._topic], listener=self._listener)

    def membership(self) -> GroupMembership:
        """A locked snapshot of the group membership (safe from any thread)."""
        raw = self._consumer.group_metadata()
        return GroupMembership(
            raw.group_id, raw.generation_id, raw.member_id, raw.group_instance_id, raw
        )

    @property
    def failing(self) -> bool:
        """Whether the last poll failed with a retriable error (a broker away)."""
        return self._poll_failing

    def stable(self) -> bool:
        """Whether the member has completed its last join (it may own no partitions)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        return getattr(coordinator, "state", None) is MemberState.STABLE

    # -- reading ----------------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> list[Record]:
        """Records from the assigned, unpaused partitions; at most ``max_poll_records``.

        A poll that fails with a retriable error (a broker away) brought nothing. A batch that
        cannot be decoded pauses its partition and is reported by :meth:`undecodable`.
        """
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except UNDECODABLE as exc:
            self._park_undecodable(exc)
            return []
        except kafka_errors.KafkaError as exc:
            error = translate(exc)
            if not isinstance(error, RetriableError):
                raise error from exc
            self._poll_failed(error, timeout_ms)
            return []
        if self._poll_failing:
            log.info("poll recovered")
        self._poll_failing = False
        self._finish_lost_join()
        records = [
            Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for rs in batches.values()
            for r in rs
        ]
        for rs in batches.values():
            if rs:
                self._last_offsets[TopicPartition(rs[-1].topic, rs[-1].partition)] = rs[-1].offset
        return records

    def _poll_failed(self, error: RetriableError, timeout_ms: int) -> None:
        # kafka-python 3.0.12 raises connection errors out of poll() while the broker is away
        # (tests/reliability/test_broker_restart.py); it reconnects by itself.
        if not self._poll_failing:
            log.warning("poll failed; retrying", error=str(error))
        self._poll_failing = True
        time.sleep(min(timeout_ms, 200) / 1000)  # such a poll may fail at once: no spinning

    def _park_undecodable(self, exc: kafka_errors.KafkaError) -> None:
        """Name, pause and remember the partition whose fetched batch cannot be decoded.

        kafka-python raises out of poll() without saying which partition; the partition being
        parsed is the fetcher's current one, and its position is the first undecoded offset.
        The fetcher's parsed state is dropped so the same batch is not raised again on the
        next poll; the partition stays paused, its offset uncommitted, until someone acts.
        """
        fetcher = getattr(self._consumer, "_fetcher", None)
        current = getattr(fetcher, "_next_partition_records", None)
        if current is None:
            raise translate(exc) from exc
        tp = TopicPartition(current.topic_partition.topic, current.topic_partition.partition)
        offset = self._position_nowait(tp)
        offset = -1 if offset is None else offset
        fetcher._next_partition_records = None  # type: ignore[union-attr]
        fetcher._next_in_line_exception_metadata = None  # type: ignore[union-attr]
        self._consumer.pause(kafka_tp(tp))
        error = UndecodableError(tp, offset, str(exc))
        error.__cause__ = exc
        self._undecodable[tp] = error

    def undecodable(self) -> dict[TopicPartition, UndecodableError]:
        """Partitions paused because a batch could not be decoded, with the reason."""
        assigned = self.assignment()
        for tp in list(self._undecodable):
            if tp not in assigned:
                del self._undecodable[tp]
        return dict(self._undecodable)

    def _finish_lost_join(self) -> None:
        """Work around kafka-python 3.0.12 dropping a join that completed.

        A rejoin started because the partitions in the metadata changed (the usual case just
        after a topic is created) can complete on the broker after a poll has timed out;
        if the metadata then settles, the consumer no longer "needs" to rejoin, never applies
        the completed join, and sits in REBALANCING with no partitions and no heartbeats
        (seen in the benchmark smoke run). Asking for a rejoin makes the next poll finish it
        (or join afresh).
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        if getattr(coordinator, "state", None) is not MemberState.REBALANCING:
            return
        if coordinator is None or coordinator.need_rejoin():
            return
        log.warning("a join kafka-python no longer awaits; asking it to finish the join")
        coordinator.request_rejoin()

    # -- position and flow ------------------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return ours(self._consumer.assignment())

    def paused(self) -> set[TopicPartition]:
        return ours(self._consumer.paused())

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*[kafka_tp(tp) for tp in partitions])

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Resume ``partitions``, except those held back by an undecodable batch."""
        held = self._undecodable.keys()
        self._consumer.resume(*[kafka_tp(tp) for tp in partitions if tp not in held])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Local state only (no network): safe from the rebalance handler."""
        self._consumer.seek(kafka_tp(tp), offset)
        self._last_offsets.pop(tp, None)

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: messages between the fetch position and the end offset.

        The end is the high watermark of the partition's last fetch; a partition not fetched
        yet (just assigned, or paused since it was) asks the broker for its end offset. A
        partition not polled yet counts from its position, else its committed offset. A
        partition whose end or position the broker does not give within ``LAG_TIMEOUT_MS``
        is left out until the next call.
        """
        assigned = self.assignment()
        ends = {tp: self._consumer.highwater(kafka_tp(tp)) for tp in assigned}
        ends |= self._end_offsets({tp for tp, end in ends.items() if end is None})
        lags = {}
        for tp, end in ends.items():
            position = self._read_from(tp)
            if end is not None and position is not None:
                lags[tp] = max(0, end - position)
        return lags

    def _read_from(self, tp: TopicPartition) -> int | None:
        """The next offset this member reads from ``tp`` (None when nobody knows yet)."""
        last = self._last_offsets.get(tp)
        if last is not None:
            return last + 1
        position = self._position_nowait(tp)
        if position is not None:
            return position
        try:
            committed = self._consumer.committed(kafka_tp(tp), timeout_ms=LAG_TIMEOUT_MS)
        except kafka_errors.KafkaError:
            return None
        return None if committed is None else int(committed)

    def _end_offsets(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int | None]:
        if not partitions:
            return {}
        try:
            ends = self._consumer.end_offsets(
                [kafka_tp(tp) for tp in partitions], timeout_ms=LAG_TIMEOUT_MS
            )
        except kafka_errors.KafkaError:  # a broker away: no figure this time
            return {}
        return {TopicPartition(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    def _position_nowait(self, tp: TopicPartition) -> int | None:
        subscription = getattr(self._consumer, "_subscription", None)
        state = getattr(subscription, "assignment", {}).get(kafka_tp(tp))
        position = getattr(state, "position", None)
        return getattr(position, "offset", None)

    # -- commits ----------------------------------------------------------------------------
    def commit(self, offsets: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Commit ``offsets`` and wait for the answer, at most ``timeout_s`` (None: the
        session timeout, 10 s at most)."""
        with translated():
            self._consumer.commit(kafka_offsets(offsets), timeout_ms=self._timeout_ms(timeout_s))

    def commit_nowait(self, offsets: dict[TopicPartition, int]) -> None:
        """Schedule a commit on the IO loop without waiting: safe from the rebalance handler."""
        with translated():
            self._consumer.commit_async(kafka_offsets(offsets))

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group (unless static membership keeps the assignment for a restart),
        waiting at most ``timeout_s`` (None: as for a commit)."""
        with translated():
            self._consumer.close(autocommit=False, timeout_ms=self._timeout_ms(timeout_s))

    def _timeout_ms(self, timeout_s: float | None) -> int:
        if timeout_s is None:
            return self._commit_timeout_ms
        return max(1, min(self._commit_timeout_ms, int(timeout_s * 1000)))


class Reader:
    """Reads topics without a group (``read_committed``): from the start, the end, or given
    offsets. Nothing it reads is committed anywhere."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Iterable[str],
        *,
        start: Literal["beginning", "end"] | Mapping[TopicPartition, int],
    ) -> None:
        with translated():
            self._consumer = KafkaConsumer(
                **client_config(kafka),
                group_id=None,
                isolation_level="read_committed",
                enable_auto_commit=False,
            )
            if isinstance(start, Mapping):
                partitions = [kafka_tp(tp) for tp in sorted(start)]
                self._consumer.assign(partitions)
                for tp, offset in start.items():
                    self._consumer.seek(kafka_tp(tp), offset)
            else:
                partitions = [
                    KafkaTopicPartition(topic, p)
                    for topic in topics
                    for p in sorted(self._consumer.partitions_for_topic(topic) or ())
                ]
                self._consumer.assign(partitions)
                if start == "end":
                    self._consumer.seek_to_end(*partitions)
                else:
                    self._consumer.seek_to_beginning(*partitions)
            for partition in partitions:  # resolve the positions now, before anything is sent
                self._consumer.position(partition)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this reader will return from ``tp``.

        Past a transaction's control records, so it can stand higher than the last offset read
        plus one."""
        with translated():
            position = self._consumer.position(kafka_tp(tp))
        assert position is not None, "positions are resolved when the reader opens"
        return int(position)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Read no more from these partitions."""
        self._consumer.pause(*(kafka_tp(tp) for tp in partitions))

    def poll(self, timeout_ms: int) -> list[Record]:
        """What arrived; a poll failing with a retriable error brought nothing."""
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except kafka_errors.KafkaError as exc:
            error = translate(exc)
            if not isinstance(error, RetriableError):
                raise error from exc
            time.sleep(min(timeout_ms, 200) / 1000)
            return []
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for rs in batches.values()
            for r in rs
        ]

    def close(self) -> None:
        self._consumer.close()
