"""The local stack is real Apache Kafka and Redis, and the CLI starts and stops it cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from common.errors import StackError
from common.settings import KafkaSettings
from messaging import MessagingError, client_config
from messaging.admin import admin as admin_client
from tagstream.stack import LocalStack, StackSettings, _alive

pytestmark = pytest.mark.integration
TAGSTREAM = [sys.executable, "-m", "tagstream"]


def test_a_message_goes_through_kafka(
    kafka_settings: KafkaSettings, topic_factory, group_id
) -> None:
    topic = topic_factory(partitions=2)
    producer = KafkaProducer(**client_config(kafka_settings), acks="all")
    sent = [f"message {i}".encode() for i in range(20)]
    for i, value in enumerate(sent):
        producer.send(topic, key=str(i).encode(), value=value)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        topic,
        **client_config(kafka_settings),
        group_id=group_id,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
    )
    received = []
    for record in consumer:
        received.append(record.value)
        if len(received) == len(sent):
            break
    consumer.close()
    assert sorted(received) == sorted(sent)


def test_redis_answers(redis_client) -> None:
    key = f"k-{uuid.uuid4().hex}"
    redis_client.set(key, b"v")
    assert redis_client.get(key) == b"v"


def test_cli_starts_once_reports_and_stops_leaving_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "TAGSTREAM_STACK_DIR": str(tmp_path / "stack")}
    env.pop("TAGSTREAM_KAFKA_BOOTSTRAP", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TAGSTREAM, "stack", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    first = cli("up")
    try:
        assert first.returncode == 0, first.stderr
        lines = first.stdout.strip().splitlines()
        assert lines[-2].startswith("KAFKA_BOOTSTRAP=127.0.0.1:")
        assert lines[-1].startswith("REDIS_URL=redis://127.0.0.1:")
        second = cli("up")
        assert "already running" in second.stdout, second.stderr
        assert second.stdout.strip().splitlines()[-2:] == lines[-2:]
        state = LocalStack(StackSettings(dir=tmp_path / "stack")).status()
        assert state is not None
        status = cli("status")
        assert status.returncode == 0 and "kafka node 1: running" in status.stdout
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not _alive(state.kafka_pid) and not _alive(state.redis_pid)
    assert cli("status").returncode == 1


def test_the_sasl_listener_takes_scram_credentials_and_refuses_wrong_ones(stack) -> None:
    assert stack.local is not None, "needs the stack this session started"
    state = stack.local.status()
    user, password = stack.local.sasl_credentials()

    def sasl(secret: str) -> KafkaSettings:
        return KafkaSettings(
            bootstrap=state.kafka_sasl_bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_username=user,
            sasl_password=secret,
        )

    with admin_client(sasl(password)) as admin:
        assert isinstance(admin.list_topics(), set)
    with (
        pytest.raises((MessagingError, StackError)),
        admin_client(sasl("wrong-" + password), timeout_s=5) as admin,
    ):
        admin.list_topics()
