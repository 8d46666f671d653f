"""Labelled articles from Kafka into the durable :class:`~trainer.store.ExampleStore`.

The consume loop's thread owns the consumer. Order per batch: poll ``articles.labelled`` ->
decode (a record that fails validation is counted, logged with its coordinates and skipped)
-> store -> commit the store's positions. The store, not the group's offsets, is the source of
truth: each assigned partition starts where the store says, so a restart loses nothing and
stores nothing twice, and a failed commit is left to the next batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from common.logging import get_logger
from common.settings import KafkaSettings
from messaging import Consumer, Record, RetriableError, TopicPartition
from schemas import SourceRef, decode_labelled_article
from trainer.service_metrics import REJECTED, STORED
from trainer.settings import TrainerSettings
from trainer.store import ExampleStore, StoredRecord

log = get_logger("trainer")


def open_consumer(kafka: KafkaSettings, settings: TrainerSettings, store: ExampleStore) -> Consumer:
    """A consumer that starts each assigned partition where the store says."""
    consumer = Consumer(kafka, group_id=settings.group_id, max_poll_records=500)
    consumer.subscribe(settings.topic, _SeekToStore(consumer, store))
    return consumer


def ingest_batch(
    consumer: Consumer, store: ExampleStore, max_body_bytes: int, timeout_ms: int = 500
) -> int:
    """Poll once, store the batch, then commit; returns how many examples were new.

    A poll that fails while the broker is away brought nothing (the consumer logs it once
    per outage); a failed commit is left to the next batch (the store, not the group's
    offsets, says where to resume).
    """
    records = consumer.poll(timeout_ms)
    if not records:
        return 0
    stored = store.append(_decoded(records, max_body_bytes))
    STORED.inc(stored)
    _commit(consumer, store)
    return stored


def drain(consumer: Consumer, store: ExampleStore, max_body_bytes: int, idle_polls: int = 3) -> int:
    """Store everything available now: poll until ``idle_polls`` polls bring nothing."""
    total, idle = 0, 0
    while idle < idle_polls:
        stored = ingest_batch(consumer, store, max_body_bytes, timeout_ms=1000)
        total += stored
        idle = idle + 1 if stored == 0 else 0
    return total


def _commit(consumer: Consumer, store: ExampleStore) -> None:
    assigned = consumer.assignment()
    positions = {
        TopicPartition(topic, partition): offset
        for (topic, partition), offset in store.positions().items()
    }
    try:
        consumer.commit({tp: offset for tp, offset in positions.items() if tp in assigned})
    except RetriableError as exc:
        log.warning("offset commit failed; the next batch commits", error=str(exc))


def _decoded(records: Iterable[Record], max_body_bytes: int) -> Iterable[StoredRecord]:
    for record in records:
        source = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)
        try:
            article = decode_labelled_article(record.value or b"", max_body_bytes=max_body_bytes)
        except ValidationError as exc:
            REJECTED.inc()
            log.warning(
                "labelled record rejected",
                topic=source.topic,
                partition=source.partition,
                offset=source.offset,
                reason=str(exc.errors()[0]["msg"]),
            )
            continue
        yield StoredRecord(article, source)


class _SeekToStore:
    """On assignment, start each partition at the store's position (the source of truth)."""

    def __init__(self, consumer: Consumer, store: ExampleStore) -> None:
        self._consumer = consumer
        self._store = store

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Nothing to do: every stored record's offset is already committed or in the store."""

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        """Nothing to do: the store, not the group, says where to resume."""

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        positions = self._store.positions()
        for partition in assigned:
            offset = positions.get((partition.topic, partition.partition))
            if offset is not None:
                self._consumer.seek(partition, offset)
