"""The confluent-kafka backend's transactions against the real Kafka: offsets committed with a
kafka-python consumer's group membership, aborts, fencing by generation and by transactional
id; and the group metadata it writes, held to what librdkafka's own consumer writes."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import confluent_kafka
import pytest

from common.settings import KafkaSettings
from messaging import (
    Consumer,
    DeadlineError,
    FencedError,
    GroupMembership,
    MessagingError,
    TopicPartition,
)
from messaging.rdkafka import METADATA_MAGIC, RdKafkaProducer, group_metadata
from tests.worker.kafka_tools import TopicReader, committed_offsets, wait_until

pytestmark = pytest.mark.integration


class NoRebalance:
    def on_assigned(self, partitions: set[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    def on_lost(self, partitions: set[TopicPartition]) -> None: ...


@pytest.fixture
def member(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_id: str
) -> Iterator[Consumer]:
    """A kafka-python consumer that owns the one partition of a new topic in ``group_id``."""
    consumer = Consumer(kafka_settings, group_id=group_id)
    consumer.subscribe(topic_factory(1, "in"), NoRebalance())
    try:
        wait_until(lambda: bool(consumer.poll(100) or consumer.assignment()), 60, "assignment")
        yield consumer
    finally:
        consumer.close(5)


def parse_metadata(data: bytes) -> GroupMembership:
    """The inverse of :func:`group_metadata`, to read librdkafka's own bytes."""
    assert data.startswith(METADATA_MAGIC)
    rest = data[len(METADATA_MAGIC) :]
    generation = int.from_bytes(rest[:4], sys.byteorder, signed=True)
    group, member, tail = rest[4:].split(b"\0", 2)
    instance = None if tail == b"\x01" else tail[1:-1].decode()
    return GroupMembership(group.decode(), generation, member.decode(), instance)


@pytest.mark.parametrize("instance", [None, "static-1"])
def test_group_metadata_is_written_byte_for_byte_as_librdkafka_writes_it(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id: str,
    instance: str | None,
) -> None:
    config = {"bootstrap.servers": kafka_settings.bootstrap, "group.id": group_id}
    if instance is not None:
        config["group.instance.id"] = instance
    consumer = confluent_kafka.Consumer(config)
    try:
        consumer.subscribe([topic_factory(1, "in")])
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "no assignment within 60 s"
            consumer.poll(0.1)
        theirs = consumer.consumer_group_metadata()
        membership = parse_metadata(theirs)
        assert membership.generation_id >= 1 and membership.member_id == consumer.memberid()
        assert (membership.group_id, membership.group_instance_id) == (group_id, instance)
        assert group_metadata(membership) == theirs
    finally:
        consumer.close()


def test_offsets_commit_with_the_transaction_and_an_abort_commits_nothing(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    reader: Callable[..., TopicReader],
    group_id: str,
    member: Consumer,
) -> None:
    out = topic_factory(1, "out")
    (tp,) = member.assignment()
    producer = RdKafkaProducer(kafka_settings, linger_ms=0, transactional_id=f"{out}-tx")
    try:
        producer.begin()
        producer.send(out, b"k", b'"aborted"', None)
        producer.commit_offsets({tp: 5}, member.membership())
        producer.abort()
        producer.begin()
        producer.send(out, b"k", b'"committed"', None)
        producer.commit_offsets({tp: 7}, member.membership())
        producer.commit()
    finally:
        producer.close(10)
    records = reader(out)
    wait_until(lambda: records.snapshot() == ["committed"], 30, "the committed transaction")
    assert committed_offsets(kafka_settings, group_id) == {tp.partition: 7}


def test_a_commit_with_a_generation_the_group_has_left_is_refused(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id: str,
    member: Consumer,
) -> None:
    """KIP-447: the broker checks the generation, so a zombie's offsets are not committed."""
    out = topic_factory(1, "out")
    (tp,) = member.assignment()
    current = member.membership()
    stale = GroupMembership(group_id, current.generation_id + 5, current.member_id, None)
    producer = RdKafkaProducer(kafka_settings, linger_ms=0, transactional_id=f"{out}-tx")
    try:
        producer.begin()
        producer.send(out, b"k", b'"zombie"', None)
        with pytest.raises(MessagingError):
            producer.commit_offsets({tp: 3}, stale)
            producer.commit()
        producer.abort()
        producer.begin()
        producer.commit_offsets({tp: 4}, member.membership())
        producer.commit()
    finally:
        producer.close(10)
    assert committed_offsets(kafka_settings, group_id) == {tp.partition: 4}


def test_a_newer_producer_with_the_same_transactional_id_fences_the_older(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    out = topic_factory(1, "out")
    older = RdKafkaProducer(kafka_settings, linger_ms=0, transactional_id=f"{out}-tx")
    newer: RdKafkaProducer | None = None
    try:
        older.begin()
        older.send(out, b"k", b'"old"', None)
        older.flush(30)
        newer = RdKafkaProducer(kafka_settings, linger_ms=0, transactional_id=f"{out}-tx")
        with pytest.raises(FencedError):
            older.commit()
    finally:
        older.close(5)
        if newer is not None:
            newer.close(5)


class _OffsetsNeverAnswered(confluent_kafka.Producer):  # type: ignore[misc]
    """librdkafka 2.16 with its group coordinator's node killed (issue 5456): the offsets
    call blocks past its own timeout. Released when the test ends."""

    release = threading.Event()

    def send_offsets_to_transaction(self, *_args: object, **_kwargs: object) -> None:
        self.release.wait(600)


def test_an_offsets_call_librdkafka_never_returns_is_given_up_at_the_deadline(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    group_id: str,
    member: Consumer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = topic_factory(1, "out")
    (tp,) = member.assignment()
    monkeypatch.setattr(confluent_kafka, "Producer", _OffsetsNeverAnswered)
    producer = RdKafkaProducer(
        kafka_settings, linger_ms=0, transactional_id=f"{out}-tx", transaction_timeout_s=2.0
    )
    try:
        producer.begin()
        producer.send(out, b"k", b'"never committed"', None)
        with pytest.raises(DeadlineError, match="did not return"):
            producer.commit_offsets({tp: 5}, member.membership())
        # The client is abandoned: nothing more goes through librdkafka's transactions,
        # so the worker stops and its replacement fences the transactional id.
        with pytest.raises(DeadlineError, match="did not return"):
            producer.abort()
        with pytest.raises(DeadlineError, match="did not return"):
            producer.begin()
        producer.close(2)
    finally:
        _OffsetsNeverAnswered.release.set()
    assert committed_offsets(kafka_settings, group_id) == {}
