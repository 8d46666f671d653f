"""Where the worker reads from: the protocol the poll loop needs, and the real one.

The real source is :class:`messaging.Consumer` (the Kafka boundary) configured from the
worker's settings; tests substitute small fakes that keep its threading rules. The consumer is
not thread-safe: the poll thread owns it, except :meth:`Source.membership` (a locked snapshot)
and, from the rebalance handler on the client's IO thread, :meth:`Source.seek` and
:meth:`Source.commit_nowait`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from common.settings import KafkaSettings
from messaging import Consumer, GroupMembership, RebalanceHandler, Record, TopicPartition
from messaging.errors import UndecodableError
from worker.settings import WorkerSettings


class Source(Protocol):
    """What the poll loop needs from a consumer."""

    def subscribe(self, topic: str, handler: RebalanceHandler) -> None: ...

    def resubscribe(self) -> None: ...

    def stable(self) -> bool: ...

    def poll(self, timeout_ms: int) -> list[Record]: ...

    def undecodable(self) -> dict[TopicPartition, UndecodableError]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def paused(self) -> set[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def commit(self, offsets: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Commit and wait for the answer, at most ``timeout_s`` (None: the client's own)."""

    def commit_nowait(self, offsets: dict[TopicPartition, int]) -> None: ...

    def membership(self) -> GroupMembership: ...

    def lag(self) -> dict[TopicPartition, int]: ...

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group, waiting at most ``timeout_s`` (None: the client's own)."""


def open_source(kafka: KafkaSettings, settings: WorkerSettings, worker_id: str) -> Consumer:
    """The worker's group member on its input topic, with explicit commits."""
    return Consumer(
        kafka,
        group_id=settings.group_id,
        client_id=f"{kafka.client_id}-{worker_id}",
        group_instance_id=settings.group_instance_id,
        auto_offset_reset=settings.auto_offset_reset,
        max_poll_records=settings.max_poll_records,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        assignor=settings.assignor,
    )
