"""Found by the broker-restart scenario: kafka-python 3.0.12 can raise a retriable error
(``KafkaConnectionError: 111 ECONNREFUSED``, from a metadata refresh behind the coordinator
lookup) straight out of ``KafkaConsumer.poll`` and ``commit`` while the broker is away. It
killed a worker, then the trainer. Both must treat it as a poll that brought nothing (or a
commit to make later) and keep going until the client reconnects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.coordinator.base import MemberState
from kafka.errors import KafkaConnectionError, UnsupportedVersionError

from common.settings import KafkaSettings, RedisSettings
from messaging import FatalError, TopicPartition
from model.settings import RegistrySettings
from model.toy import synthetic_articles
from tagstream import feed
from tests.reliability.support import stored_ids
from tests.worker.kafka_tools import wait_until
from trainer.service import TrainerService
from trainer.settings import TrainerSettings
from worker.settings import WorkerSettings
from worker.source import open_source

pytestmark = pytest.mark.integration


def test_a_retriable_error_out_of_poll_is_a_poll_that_brought_nothing(
    monkeypatch: pytest.MonkeyPatch, kafka_settings: KafkaSettings, group_id: str
) -> None:
    failures = [KafkaConnectionError("111 ECONNREFUSED")]
    real_poll = KafkaConsumer.poll

    def poll(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_poll(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "poll", poll)
    source = open_source(kafka_settings, WorkerSettings(group_id=group_id), "reconnect")
    try:
        assert source.poll(100) == []
        assert source.poll(100) == []  # the real poll again
        failures.append(UnsupportedVersionError("not retriable"))
        with pytest.raises(FatalError, match="not retriable"):
            source.poll(100)
    finally:
        source.close()


def test_the_trainer_stores_on_through_retriable_errors_out_of_poll_and_commit(
    monkeypatch: pytest.MonkeyPatch,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topic_factory: Any,
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = topic_factory(1, "labelled")
    articles = synthetic_articles(("earn", "acq"), 20, seed=3, prefix="r")
    feed.produce(kafka_settings, topic, articles)
    settings = TrainerSettings(topic=topic, group_id=group_id, store_path=tmp_path / "s.db")
    service = TrainerService(settings, kafka_settings, redis_settings, RegistrySettings())
    poll_failures = [KafkaConnectionError("111 ECONNREFUSED")]
    commit_failures = [KafkaConnectionError("111 ECONNREFUSED")]
    real_poll, real_commit = KafkaConsumer.poll, KafkaConsumer.commit

    def poll(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if poll_failures:
            raise poll_failures.pop()
        return real_poll(self, *args, **kwargs)

    def commit(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if commit_failures:
            raise commit_failures.pop()
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "poll", poll)
    monkeypatch.setattr(KafkaConsumer, "commit", commit)
    consumer = service.consumer()
    try:
        assert service.ingest(consumer) == 0  # the failing poll
        assert service.drain(consumer) == 20  # the failing commit included
    finally:
        consumer.close()
        service.store.close()
    assert sorted(stored_ids(settings.store_path)) == sorted(a.id for a in articles)


class Assignments:
    """A rebalance handler that keeps every assignment it is told of."""

    def __init__(self) -> None:
        self.assigned: list[set[TopicPartition]] = []

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.assigned.append(partitions)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Nothing in flight to drain here."""

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        """Nothing in flight to drop here."""


def test_a_join_kafka_python_stopped_awaiting_is_finished_by_the_next_polls(
    kafka_settings: KafkaSettings, topic_factory: Any, group_id: str
) -> None:
    """kafka-python 3.0.12 can leave a member rebalancing with nothing left to rejoin for
    (a rejoin started by a metadata change, which then settled, while a poll had timed out):
    no partitions, no heartbeats, until the worker's join timeout. The source notices the
    state and has the consumer finish the join."""
    topic = topic_factory(2, "join")
    handler = Assignments()
    source = open_source(kafka_settings, WorkerSettings(group_id=group_id), "join")
    try:
        source.subscribe(topic, handler)
        wait_until(lambda: source.poll(100) == [] and bool(handler.assigned), 60, "a first join")
        coordinator = source._consumer._coordinator
        coordinator.state = MemberState.REBALANCING  # what the lost join leaves behind
        assert not coordinator.need_rejoin()
        joins = len(handler.assigned)
        wait_until(lambda: source.poll(100) == [] and len(handler.assigned) > joins, 30, "a join")
        assert coordinator.state is MemberState.STABLE
        assert {tp.partition for tp in handler.assigned[-1]} == {0, 1}
    finally:
        source.close()
