"""Every producer of the product waits for all in-sync replicas and is idempotent.

With ``min.insync.replicas=2`` on a three-node cluster an ``acks=all`` write is on two nodes
before it counts, and idempotence keeps a retried batch from landing twice; a producer with
``acks=1`` or without idempotence would lose or repeat results when a leader dies.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from messaging import Producer
from messaging.config import producer_config
from tests.foundation.test_boundary import PRODUCT, ROOT

PRODUCER_MODULE = ROOT / "messaging" / "producer.py"


def test_producer_config_asks_for_all_replicas_and_idempotence() -> None:
    config = producer_config(KafkaSettings(bootstrap="127.0.0.1:9092"))
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is True


def _kafka_producer_calls(path: Path) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "KafkaProducer"
    ]


def test_only_messaging_producer_builds_a_kafka_producer() -> None:
    builders = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for package in (*PRODUCT, "messaging")
        for path in sorted((ROOT / package).rglob("*.py"))
        for call in _kafka_producer_calls(path)
    ]
    assert builders == [f"messaging/producer.py:{_kafka_producer_calls(PRODUCER_MODULE)[0].lineno}"]


def test_the_producer_does_not_override_acks_or_idempotence() -> None:
    """What ``Producer`` adds to ``producer_config`` leaves acks and idempotence alone."""
    source = PRODUCER_MODULE.read_text()
    for key in ("acks", "enable_idempotence", "max_in_flight"):
        assert f'"{key}"' not in source, f"messaging/producer.py sets {key}"


@pytest.mark.integration
@pytest.mark.parametrize("transactional_id", [None, "tx-config-check"])
def test_a_live_producer_runs_with_acks_all_and_idempotence(
    kafka_settings: KafkaSettings, transactional_id: str | None
) -> None:
    producer = Producer(kafka_settings, transactional_id=transactional_id)
    try:
        config = producer._producer.config
        assert config["acks"] in (-1, "all")
        assert config["enable_idempotence"] is True
    finally:
        producer.close(timeout_s=10)
