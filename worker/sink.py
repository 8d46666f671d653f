"""Where the worker writes to: the protocol the delivery stage needs, and the real one.

The real sink is :class:`messaging.Producer` (the Kafka boundary): idempotent, ``acks=all``,
compressed as ``TAGSTREAM_KAFKA_COMPRESSION_TYPE`` says. At-least-once, each send reports
its outcome to a callback on the producer's sender thread. Exactly-once, the same producer
with a stable ``transactional_id`` (:meth:`WorkerSettings.transactional_id`); opening it fences
any older producer with the same id and aborts its open transaction.
"""

from __future__ import annotations

import threading
from typing import Protocol

from common.settings import KafkaSettings
from messaging import GroupMembership, Producer, TopicPartition
from messaging.producer import Done
from worker.settings import WorkerSettings


class Sink(Protocol):
    """What the delivery stage needs from a producer."""

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None: ...

    def begin(self) -> None: ...

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...


def open_sink(
    kafka: KafkaSettings, settings: WorkerSettings, worker_id: str, cancel: threading.Event
) -> Sink:
    """The worker's producer; transactional under exactly-once. ``cancel`` ends its waits.

    ``TAGSTREAM_KAFKA_PRODUCER_BACKEND=confluent-kafka`` sends the output through librdkafka
    (:mod:`messaging.rdkafka`, imported only then), under either guarantee.
    """
    if kafka.producer_backend == "confluent-kafka":
        from messaging.rdkafka import RdKafkaProducer  # noqa: PLC0415 - only when chosen

        return RdKafkaProducer(
            kafka,
            client_id=f"{kafka.client_id}-{worker_id}",
            linger_ms=settings.producer_linger_ms,
            transactional_id=settings.transactional_id() if settings.exactly_once else None,
            transaction_timeout_s=settings.transaction_timeout_s,
            cancel=cancel,
        )
    if not settings.exactly_once:
        return Producer(
            kafka, client_id=f"{kafka.client_id}-{worker_id}", linger_ms=settings.producer_linger_ms
        )
    return Producer(
        kafka,
        client_id=f"{kafka.client_id}-{worker_id}",
        linger_ms=settings.producer_linger_ms,
        transactional_id=settings.transactional_id(),
        # A transaction that starts while the previous one's markers are still being written
        # gets CONCURRENT_TRANSACTIONS and is retried after this backoff; the default 100 ms
        # made one transaction in ten take over 200 ms here.
        retry_backoff_ms=settings.transaction_retry_backoff_ms,
        transaction_timeout_s=settings.transaction_timeout_s,
        cancel=cancel,
    )
