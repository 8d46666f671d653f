"""The worker against Apache Kafka's own Java clients, for every compression codec.

Apache Kafka's ``ConsoleProducer`` sends keyed articles compressed with each codec; the worker
must predict every one of them, Kafka's ``ConsoleConsumer`` (``read_committed``) must read every
prediction, and Kafka's ``ConsumerGroupCommand`` must report the group's lag at 0. Then
kafka-python producers send with each ``compression_type`` too. Both guarantees.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from common.settings import KafkaSettings
from messaging import client_config
from messaging.producer import close_kafka_producer
from model.toy import synthetic_articles
from schemas import Article
from tests.interop.java_tools import console_consume, console_produce, describe_group
from tests.worker.harness import LABELS, env_for
from tests.worker.kafka_tools import TopicReader, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PER_CODEC = 200
PER_PYTHON_CODEC = 50


def keyed_articles(prefix: str, count: int, seed: int) -> list[tuple[str, str]]:
    made = synthetic_articles(LABELS, count, seed=seed, prefix=prefix)
    return [
        (f"{prefix}-{i}", Article(id=f"{prefix}-{i}", title=a.title, body=a.body).model_dump_json())
        for i, a in enumerate(made)
    ]


def python_produce(
    kafka: KafkaSettings, topic: str, codec: str, records: list[tuple[str, str]]
) -> None:
    producer = KafkaProducer(
        **client_config(kafka),
        acks="all",
        linger_ms=20,
        compression_type=None if codec == "none" else codec,
    )
    try:
        for key, value in records:
            producer.send(topic, key=key.encode(), value=value.encode())
        producer.flush(timeout=30)
    finally:
        close_kafka_producer(producer, 5)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_every_codec_from_the_java_producer_is_predicted_and_read_by_the_java_consumer(
    guarantee: str,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(3)
    bootstrap = kafka_settings.bootstrap
    predictions = reader(t["output"])
    worker = processes(
        env_for(
            service_env,
            t,
            group_id,
            model_path=str(toy_model),
            processing_guarantee=guarantee,
        ),
        f"worker-{guarantee}",
    )
    worker.wait_for("partitions assigned", 90)

    sent: dict[str, set[str]] = {}
    for seed, codec in enumerate(CODECS):
        records = keyed_articles(f"java-{codec}", PER_CODEC, seed)
        console_produce(bootstrap, t["input"], records, codec=codec)
        sent[f"java {codec}"] = {key for key, _ in records}
    for seed, codec in enumerate(CODECS, start=len(CODECS)):
        records = keyed_articles(f"python-{codec}", PER_PYTHON_CODEC, seed)
        python_produce(kafka_settings, t["input"], codec, records)
        sent[f"python {codec}"] = {key for key, _ in records}
    everything = set().union(*sent.values())

    wait_until(lambda: set(predictions.ids()) >= everything, 120, "every article predicted")
    lag: list[Any] = []

    def lag_is_zero() -> bool:
        lag[:] = describe_group(bootstrap, group_id)
        return all(row.lag == 0 for row in lag)

    wait_until(lag_is_zero, 60, f"the group's committed lag at 0 (last: {lag})")
    java_read = Counter(
        json.loads(value)["article_id"]
        for value in console_consume(bootstrap, t["output"], len(everything))
    )
    assert worker.process.poll() is None, "the worker died"

    seen = predictions.ids()
    print(f"\n{guarantee}: producer codec, sent, predicted, read by Java, lag")
    for name, keys in sent.items():
        predicted = sum(1 for key in keys if seen[key] > 0)
        read = sum(1 for key in keys if java_read[key] > 0)
        print(f"  {name:<14} {len(keys):>4} {predicted:>4} {read:>4}")
        assert predicted == len(keys), f"{name}: {len(keys) - predicted} articles not predicted"
        assert read == len(keys), f"{name}: {len(keys) - read} predictions not read by Java"
    print(f"  group lag per partition: {[(row.partition, row.lag) for row in lag]}")
    assert set(java_read) == everything
    if guarantee == "exactly_once":
        assert max(java_read.values()) == 1, "a prediction was read twice under read_committed"
        assert max(seen.values()) == 1
