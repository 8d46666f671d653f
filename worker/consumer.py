"""A thin wrapper around kafka-python's ``KafkaConsumer``, and the protocol the loop needs.

kafka-python's consumer is not thread-safe: the poll thread owns it. The exceptions are
marked: :meth:`KafkaSource.group_metadata` is a locked snapshot (documented as safe to call
at any time), and the rebalance handler runs on kafka-python's own IO thread while the poll
thread is blocked inside ``poll()``, where only non-blocking calls are allowed
(:meth:`KafkaSource.seek`, :meth:`KafkaSource.commit_nowait`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.coordinator.base import MemberState
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from common.logging import get_logger
from common.settings import KafkaSettings
from worker.items import Record
from worker.offsets import TopicPartition
from worker.settings import WorkerSettings

log = get_logger("worker.consumer")


class RebalanceHandler(Protocol):
    """Told about assignment changes; runs on the consumer's IO thread."""

    def on_assigned(self, partitions: set[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    def on_lost(self, partitions: set[TopicPartition]) -> None: ...


class Source(Protocol):
    """What the poll loop needs from a consumer; :class:`KafkaSource` is the real one."""

    def subscribe(self, topic: str, handler: RebalanceHandler) -> None: ...

    def resubscribe(self) -> None: ...

    def poll(self, timeout_ms: int) -> list[Record]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def paused(self) -> set[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def commit_nowait(self, offsets: dict[TopicPartition, int]) -> None: ...

    def group_metadata(self) -> Any: ...

    def lag(self) -> dict[TopicPartition, int]: ...

    def close(self) -> None: ...


def kafka_tp(tp: TopicPartition) -> Any:
    return KafkaTopicPartition(tp.topic, tp.partition)


def kafka_offsets(offsets: dict[TopicPartition, int]) -> dict[Any, Any]:
    return {kafka_tp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


def ours(partitions: Iterable[Any]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, handler: RebalanceHandler) -> None:
        self.handler = handler

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self.handler.on_revoked(ours(revoked))

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        self.handler.on_assigned(ours(assigned))

    def on_partitions_lost(self, lost: Iterable[Any]) -> None:
        self.handler.on_lost(ours(lost))


class KafkaSource:
    """A group member reading one topic with manual, explicit offset commits."""

    def __init__(self, kafka: KafkaSettings, settings: WorkerSettings, worker_id: str) -> None:
        config = kafka.client_config() | {
            "client_id": f"{kafka.client_id}-{worker_id}",
            "group_id": settings.group_id,
            "group_instance_id": settings.group_instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": settings.auto_offset_reset,
            "isolation_level": "read_committed",
            "max_poll_records": settings.max_poll_records,
            "max_poll_interval_ms": settings.max_poll_interval_ms,
            "session_timeout_ms": settings.session_timeout_ms,
            "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        }
        self._consumer = KafkaConsumer(**config)
        self._commit_timeout_ms = min(settings.session_timeout_ms, 10_000)
        self._last_offsets: dict[TopicPartition, int] = {}
        self._poll_failing = False
        self._topic = ""
        self._listener: _Listener | None = None

    def subscribe(self, topic: str, handler: RebalanceHandler) -> None:
        # With the topic's metadata known before the first JoinGroup, the leader assigns
        # partitions in the first round instead of a second one.
        self._consumer.partitions_for_topic(topic)
        self._topic, self._listener = topic, _Listener(handler)
        self._consumer.subscribe([topic], listener=self._listener)

    def resubscribe(self) -> None:
        """Leave the group and join again: the way out of a join that never completes."""
        self._consumer.unsubscribe()
        self._consumer.subscribe([self._topic], listener=self._listener)

    def poll(self, timeout_ms: int) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            # kafka-python 3.0.12 can raise a connection error out of poll() while the broker
            # is away (seen in tests/reliability/test_broker_restart.py); the client
            # reconnects by itself, so such a poll simply brought nothing.
            if not exc.retriable:
                raise
            if not self._poll_failing:
                log.warning("poll failed; retrying", error=f"{type(exc).__name__}: {exc}")
            self._poll_failing = True
            time.sleep(min(timeout_ms, 200) / 1000)  # such a poll may fail at once: no spinning
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

    def assignment(self) -> set[TopicPartition]:
        return ours(self._consumer.assignment())

    def paused(self) -> set[TopicPartition]:
        return ours(self._consumer.paused())

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*[kafka_tp(tp) for tp in partitions])

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.resume(*[kafka_tp(tp) for tp in partitions])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Local state only (no network): safe from the rebalance handler."""
        self._consumer.seek(kafka_tp(tp), offset)
        self._last_offsets.pop(tp, None)

    def _finish_lost_join(self) -> None:
        """Work around kafka-python 3.0.12 dropping a join that completed.

        A rejoin started because the partitions in the metadata changed (the usual case just
        after a topic is created) can complete on the broker after a poll has timed out;
        if the metadata then settles, the consumer no longer "needs" to rejoin, never applies
        the completed join, and sits in REBALANCING with no partitions and no heartbeats
        until ``join_timeout_s`` (seen in the benchmark smoke run). Asking for a rejoin makes
        the next poll finish it (or join afresh).
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        if getattr(coordinator, "state", None) is not MemberState.REBALANCING:
            return
        if coordinator is None or coordinator.need_rejoin():
            return
        log.warning("a join kafka-python no longer awaits; asking it to finish the join")
        coordinator.request_rejoin()

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self._consumer.commit(kafka_offsets(offsets), timeout_ms=self._commit_timeout_ms)

    def commit_nowait(self, offsets: dict[TopicPartition, int]) -> None:
        """Schedule a commit on the IO loop without waiting: safe from the rebalance handler."""
        self._consumer.commit_async(kafka_offsets(offsets))

    def group_metadata(self) -> Any:
        """A locked snapshot of the group membership, for ``send_offsets_to_transaction``."""
        return self._consumer.group_metadata()

    def lag(self) -> dict[TopicPartition, int]:
        lags = {}
        for tp in self.assignment():
            high = self._consumer.highwater(kafka_tp(tp))
            if high is not None:
                lags[tp] = max(0, high - self._last_offsets.get(tp, high - 1) - 1)
        return lags

    def close(self) -> None:
        """Leave the group (unless static membership keeps the assignment for a restart)."""
        self._consumer.close(autocommit=False, timeout_ms=self._commit_timeout_ms)
