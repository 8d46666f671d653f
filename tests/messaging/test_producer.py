"""The producer outlives a record the broker refuses (real Kafka): later records still go out,
with either backend (kafka-python, or confluent-kafka), transactional or not.

kafka-python 3.0.12 alone fails here: an idempotent producer turns fatal after one
``MESSAGE_TOO_LARGE`` and every later send fails with it; a transactional one is left with a
sequence gap that breaks the next transaction to the same partition.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from common.settings import KafkaSettings
from messaging import Admin, MessagingError, Producer, RefusedError, TopicSpec
from messaging.rdkafka import RdKafkaProducer
from tests.worker.kafka_tools import TopicReader, wait_until

pytestmark = pytest.mark.integration

INCOMPRESSIBLE = os.urandom(20_000)
"""Over the topic's 1 KiB even after the producer's gzip."""


def small_topic(kafka: KafkaSettings, topic_factory: Callable[..., str]) -> str:
    name = f"{topic_factory(1, 'x')}-small"
    with Admin(kafka) as client:
        client.create_topics([TopicSpec(name, 1, max_message_bytes=1024)])
    return name


class Outcomes:
    """What the broker answered for each send, by name."""

    def __init__(self) -> None:
        self.answers: dict[str, BaseException | None] = {}
        self._done = threading.Condition()

    def callback(self, name: str) -> Callable[[BaseException | None], None]:
        def done(error: BaseException | None) -> None:
            with self._done:
                self.answers[name] = error
                self._done.notify_all()

        return done

    def wait(self, *names: str) -> None:
        wait_until(lambda: all(n in self.answers for n in names), 30, f"answers for {names}")


def open_producer(
    kafka: KafkaSettings, backend: str, transactional_id: str | None = None
) -> Producer | RdKafkaProducer:
    if backend == "confluent-kafka":
        return RdKafkaProducer(kafka, linger_ms=0, transactional_id=transactional_id)
    return Producer(kafka, linger_ms=0, transactional_id=transactional_id)


@pytest.mark.parametrize("backend", ["kafka-python", "confluent-kafka"])
def test_an_idempotent_producer_sends_on_after_the_broker_refused_a_record(
    backend: str, kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    topic = small_topic(kafka_settings, topic_factory)
    producer = open_producer(kafka_settings, backend)
    outcomes = Outcomes()
    try:
        producer.send(topic, b"big", INCOMPRESSIBLE, outcomes.callback("big"))
        producer.flush(30)
        outcomes.wait("big")
        assert isinstance(outcomes.answers["big"], RefusedError)
        for i in range(3):
            producer.send(topic, b"small", b"y" * 100, outcomes.callback(f"small-{i}"))
        producer.flush(30)
        outcomes.wait("small-0", "small-1", "small-2")
    finally:
        producer.close(10)
    assert [outcomes.answers[f"small-{i}"] for i in range(3)] == [None, None, None]


@pytest.mark.parametrize("backend", ["kafka-python", "confluent-kafka"])
def test_a_transactional_producer_commits_the_next_transaction_after_a_refused_one(
    backend: str,
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    reader: Callable[..., TopicReader],
) -> None:
    topic = small_topic(kafka_settings, topic_factory)
    producer = open_producer(kafka_settings, backend, transactional_id=f"{topic}-tx")
    outcomes = Outcomes()
    try:
        producer.begin()
        producer.send(topic, b"big", INCOMPRESSIBLE, outcomes.callback("big"))
        producer.flush(30)
        outcomes.wait("big")
        assert isinstance(outcomes.answers["big"], RefusedError)
        with pytest.raises(MessagingError):
            producer.commit()
        producer.abort()
        producer.begin()
        producer.send(topic, b"small", b'"small"', outcomes.callback("small"))
        producer.commit()
    finally:
        producer.close(10)
    assert outcomes.answers["small"] is None
    committed = reader(topic)
    wait_until(lambda: committed.snapshot() == ["small"], 30, "the second transaction")
