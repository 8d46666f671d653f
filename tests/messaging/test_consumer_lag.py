"""``Consumer.lag``: end offset minus where the member reads from, for every assigned
partition, also one it has not fetched from yet (the worker's lag gauge is this figure)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from common.settings import KafkaSettings
from messaging import Consumer, TopicPartition
from tests.worker.kafka_tools import produce, wait_until

pytestmark = pytest.mark.integration


class Pausing:
    """A rebalance handler that pauses what it is given, as backpressure does, before any
    fetch: the member owns the partitions but never reads from them."""

    def __init__(self) -> None:
        self.consumer: Consumer | None = None
        self.assigned: set[TopicPartition] = set()

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None
        self.consumer.pause(partitions)
        self.assigned |= partitions

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.assigned -= partitions

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        self.assigned -= partitions


@pytest.fixture
def consumers(kafka_settings: KafkaSettings) -> Iterator[Callable[[str], Consumer]]:
    opened: list[Consumer] = []

    def open_consumer(group: str) -> Consumer:
        opened.append(
            Consumer(
                kafka_settings, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=1000
            )
        )
        return opened[-1]

    yield open_consumer
    for consumer in opened:
        consumer.close()


def test_lag_of_an_assigned_partition_not_polled_yet_is_end_minus_committed(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id: str,
    consumers: Callable[[str], Consumer],
) -> None:
    topic = topic_factory(2)
    produce(kafka_settings, topic, [(b"k", b"v%d" % i) for i in range(10)], partition=0)
    produce(kafka_settings, topic, [(b"k", b"w%d" % i) for i in range(7)], partition=1)
    earlier = joined(consumers(group_id), topic)
    earlier.commit({TopicPartition(topic, 0): 4})
    earlier.close()

    member = joined(consumers(group_id), topic)
    assert member.lag() == {TopicPartition(topic, 0): 6, TopicPartition(topic, 1): 7}


def joined(consumer: Consumer, topic: str) -> Consumer:
    """``consumer`` once it owns both partitions of ``topic``, having read nothing."""
    handler = Pausing()
    handler.consumer = consumer
    consumer.subscribe(topic, handler)
    records = []
    deadline = 60.0

    def assigned() -> bool:
        records.extend(consumer.poll(100))
        return len(handler.assigned) == 2

    wait_until(assigned, deadline, "both partitions assigned")
    records.extend(consumer.poll(200))
    assert records == [], "every partition is paused from its assignment on"
    return consumer
