"""The confluent-kafka producer backend: its errors, its deadlines and what it refuses."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from confluent_kafka import KafkaError

from common.errors import ConfigError
from common.settings import KafkaSettings
from messaging import (
    DeadlineError,
    FatalError,
    FencedError,
    GroupMembership,
    MessagingError,
    RefusedError,
    RetriableError,
)
from messaging.rdkafka import RdKafkaProducer, rdkafka_config, translate_rdkafka
from worker.settings import WorkerSettings
from worker.sink import open_sink


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, RefusedError),
        (KafkaError.INVALID_RECORD, RefusedError),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, FatalError),
        (KafkaError.SASL_AUTHENTICATION_FAILED, FatalError),
        (KafkaError._MSG_TIMED_OUT, DeadlineError),
        (KafkaError._FENCED, FencedError),
        (KafkaError._PURGE_QUEUE, RetriableError),
        (KafkaError.NOT_LEADER_FOR_PARTITION, RetriableError),
        (KafkaError._TRANSPORT, RetriableError),
    ],
)
def test_librdkafka_errors_become_the_projects_kinds(code: int, kind: type) -> None:
    error = translate_rdkafka(KafkaError(code))
    assert type(error) is kind
    assert KafkaError(code).name() in str(error)


def test_a_fatal_librdkafka_error_is_fatal_whatever_its_code() -> None:
    assert type(translate_rdkafka(KafkaError(KafkaError._TRANSPORT, fatal=True))) is FatalError


def test_the_backend_is_configured_as_every_producer_here() -> None:
    settings = KafkaSettings(bootstrap="a:1,b:2", compression_type="zstd")
    config = rdkafka_config(settings, client_id="w", linger_ms=7)
    assert config["bootstrap.servers"] == "a:1,b:2"
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert (config["compression.type"], config["linger.ms"]) == ("zstd", 7)
    with pytest.raises(ConfigError, match="SASL_USERNAME"):
        rdkafka_config(KafkaSettings(security_protocol="SASL_SSL"), client_id="w", linger_ms=0)


def test_an_exactly_once_sink_on_the_confluent_backend_gives_up_at_its_deadline() -> None:
    """Exactly-once on librdkafka is transactional: with no broker, initialising transactions
    ends at ``TAGSTREAM_WORKER_TRANSACTION_TIMEOUT_S``, not never."""
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{unused_port()}", producer_backend="confluent-kafka"
    )
    settings = WorkerSettings(processing_guarantee="exactly_once", transaction_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(DeadlineError, match="initialising transactions"):
        open_sink(kafka, settings, "w", threading.Event())
    assert time.monotonic() - started < 10


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_with_no_broker_flush_and_close_keep_their_deadlines_and_fail_what_was_unsent() -> None:
    producer = RdKafkaProducer(KafkaSettings(bootstrap=f"127.0.0.1:{unused_port()}"))
    answers: list[BaseException | None] = []
    heard = threading.Event()

    def done(error: BaseException | None) -> None:
        answers.append(error)
        heard.set()

    producer.send("t", b"k", b"v", done)
    started = time.monotonic()
    with pytest.raises(DeadlineError, match="1 records without an answer"):
        producer.flush(1.0)
    assert time.monotonic() - started < 5
    producer.close(0.5)
    assert heard.wait(5), "close must fail the record it could not send"
    assert len(answers) == 1 and isinstance(answers[0], RetriableError)
    assert time.monotonic() - started < 10


def test_a_producer_without_a_transactional_id_refuses_transactions() -> None:
    producer = RdKafkaProducer(KafkaSettings(bootstrap=f"127.0.0.1:{unused_port()}"))
    try:
        for call in (producer.begin, producer.commit, producer.abort):
            with pytest.raises(FatalError, match="without a transactional id"):
                call()
        with pytest.raises(MessagingError):
            producer.commit_offsets({}, GroupMembership("g", 1, "m", None))
    finally:
        producer.close(0)
