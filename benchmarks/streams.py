"""Kafka for the benchmarks: a stack to talk to, topics, producing, and timing what arrives.

Latency is measured from the input message's timestamp (set by the sending producer, here)
to the moment a ``read_committed`` consumer in this process receives the prediction, so in
exactly-once mode it includes waiting for the transaction to commit.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from common.settings import KafkaSettings
from messaging import client_config, ensure_topics
from schemas import Article
from tagstream.stack import LocalStack, StackSettings

Message = tuple[bytes, bytes]
FETCH_MAX_WAIT_MS = 10
"""How long the broker may hold the collector's fetch when nothing is new; kafka-python's
default (500 ms) would add up to that much to a latency when read_committed data becomes
visible by a transaction marker rather than by new bytes."""


@contextmanager
def kafka() -> Iterator[KafkaSettings]:
    """``TAGSTREAM_KAFKA_BOOTSTRAP`` when set, else a local stack of its own, stopped after."""
    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        yield KafkaSettings(bootstrap=os.environ["TAGSTREAM_KAFKA_BOOTSTRAP"])
        return
    with tempfile.TemporaryDirectory(prefix="tagstream-bench-") as directory:
        stack = LocalStack(StackSettings(dir=Path(directory)))
        state, _ = stack.up()
        try:
            yield KafkaSettings(bootstrap=state.kafka_bootstrap)
        finally:
            stack.down()


class Topics:
    """Topic and group names unique to this run: ``bench-<run>.<name>``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.run = uuid.uuid4().hex[:8]

    def name(self, name: str) -> str:
        return f"bench-{self.run}.{name}"

    def create(self, name: str, partitions: int = 1) -> str:
        topic = self.name(name)
        ensure_topics(self.settings, {topic: partitions})
        return topic


def messages(articles: Sequence[Article]) -> list[Message]:
    """(key, value) pairs as ``tagstream produce`` sends them."""
    return [(a.id.encode(), a.model_dump_json().encode()) for a in articles]


def producer(settings: KafkaSettings) -> KafkaProducer:
    return KafkaProducer(**client_config(settings), acks="all", linger_ms=0)


def fill(settings: KafkaSettings, topic: str, batch: Sequence[Message]) -> None:
    """Send every message and wait for the broker to acknowledge them all."""
    sender = KafkaProducer(**client_config(settings), acks="all", linger_ms=5)
    try:
        for key, value in batch:
            sender.send(topic, key=key, value=value)
        sender.flush()
    finally:
        sender.close()


def send(
    sender: KafkaProducer, topic: str, batch: Sequence[Message], per_second: float | None = None
) -> dict[bytes, float]:
    """Send ``batch`` (at ``per_second`` on a steady schedule, else at once); the timestamp
    of each message by key, in seconds since the epoch."""
    sent: dict[bytes, float] = {}
    started = time.monotonic()
    for index, (key, value) in enumerate(batch):
        if per_second:
            delay = started + index / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        now_ms = int(time.time() * 1000)
        sender.send(topic, key=key, value=value, timestamp_ms=now_ms)
        sent[key] = now_ms / 1000
    sender.flush()
    return sent


class Collector:
    """Receives a topic from its end in a thread, ``read_committed``; notes when each key came."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._consumer = KafkaConsumer(
            **client_config(settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        partitions = self._consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_end()
        for tp in assigned:
            self._consumer.position(tp)
        self.received: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.time()
                with self._lock:
                    for record in records:
                        self.received.setdefault(record.key, now)

    def wait_for(self, keys: Sequence[bytes], timeout_s: float) -> dict[bytes, float]:
        """When each of ``keys`` arrived; raises TimeoutError when some did not in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                missing = [k for k in keys if k not in self.received]
                if not missing:
                    return {k: self.received[k] for k in keys}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(keys)} results did not arrive")
            time.sleep(0.05)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
