"""A thin wrapper around kafka-python's ``KafkaProducer``, and the protocol the loop needs.

At-least-once: idempotent producer, ``acks=all``; each send reports its outcome to a
callback (run on the producer's sender thread). Exactly-once: the same producer with a stable
``transactional_id``; :meth:`KafkaSink.__init__` calls ``init_transactions``, which fences
any older producer with the same id and aborts its open transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kafka import KafkaProducer

from common.settings import KafkaSettings
from worker.consumer import kafka_offsets
from worker.offsets import TopicPartition
from worker.settings import WorkerSettings

Done = Callable[[BaseException | None], None]


class Sink(Protocol):
    """What the runner needs from a producer; :class:`KafkaSink` is the real one."""

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None: ...

    def begin(self) -> None: ...

    def send_offsets(self, offsets: dict[TopicPartition, int], group_metadata: Any) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...


class KafkaSink:
    """Publishes predictions and dead letters; transactional in exactly-once mode."""

    def __init__(self, kafka: KafkaSettings, settings: WorkerSettings, worker_id: str) -> None:
        config = kafka.client_config() | {
            "client_id": f"{kafka.client_id}-{worker_id}",
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": settings.producer_linger_ms,
        }
        if settings.exactly_once:
            config["transactional_id"] = settings.transactional_id()
            # A transaction that starts while the previous one's markers are still being
            # written gets CONCURRENT_TRANSACTIONS and is retried after this backoff; the
            # default 100 ms made one transaction in ten take over 200 ms here.
            config["retry_backoff_ms"] = settings.transaction_retry_backoff_ms
        self._producer = KafkaProducer(**config)
        if settings.exactly_once:
            self._producer.init_transactions()

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None:
        future = self._producer.send(topic, key=key, value=value)
        if on_done is not None:
            future.add_callback(lambda _metadata: on_done(None))
            future.add_errback(on_done)

    def begin(self) -> None:
        self._producer.begin_transaction()

    def send_offsets(self, offsets: dict[TopicPartition, int], group_metadata: Any) -> None:
        self._producer.send_offsets_to_transaction(kafka_offsets(offsets), group_metadata)

    def commit(self) -> None:
        self._producer.commit_transaction()

    def abort(self) -> None:
        self._producer.abort_transaction()

    def flush(self, timeout_s: float) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)
