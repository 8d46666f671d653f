"""A record batch the worker cannot decode stops its partition, visibly, and nothing else.

The worker runs without the zstd library (a stub that fails to import stands in front of
it), and Apache Kafka's ConsoleProducer writes a zstd batch to one partition. The worker must
log one line naming the partition, offset and cause, count it, turn /healthz unhealthy, keep
that partition's committed offset before the batch, and go on predicting the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.settings import KafkaSettings
from messaging.admin import admin
from tests.interop.java_tools import console_produce
from tests.interop.test_java_clients import keyed_articles, python_produce
from tests.worker.harness import env_for, get
from tests.worker.kafka_tools import TopicReader, WorkerProcess, committed_offsets, wait_until

pytestmark = pytest.mark.integration


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    with admin(kafka) as client:
        return {tp.partition: end for tp, end in client.end_offsets(topic).items()}


def test_an_undecodable_batch_pauses_its_partition_and_fails_healthz(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    stubs = tmp_path / "no-zstd"
    stubs.mkdir()
    (stubs / "zstandard.py").write_text('raise ImportError("zstd left out for this test")\n')
    t = topics(3)
    env = env_for(service_env, t, group_id, model_path=str(toy_model))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stubs), env.get("PYTHONPATH")]))
    predictions = reader(t["output"])
    worker = processes(env, "worker")
    port = worker.wait_for("health and metrics listening", 90)["port"]
    worker.wait_for("partitions assigned", 90)

    before = python_produce_and_wait(kafka_settings, t["input"], "before", predictions)
    ends = end_offsets(kafka_settings, t["input"])
    same_key = [("one-key", value) for _, value in keyed_articles("zstd", 20, seed=7)]
    console_produce(kafka_settings.bootstrap, t["input"], same_key, codec="zstd")
    grown = {p: end for p, end in end_offsets(kafka_settings, t["input"]).items() if end > ends[p]}
    assert len(grown) == 1, grown
    (bad,) = grown
    first_bad = ends[bad]

    line = worker.wait_for("record batch cannot be decoded; partition paused, offset not committed")
    assert (line["partition"], line["offset"]) == (bad, first_bad)
    assert "zstd" in line["cause"].lower() or "codec" in line["cause"].lower()
    status, body = get(port, "/healthz")
    assert status == 503 and "undecodable" in body

    after = python_produce_and_wait(
        kafka_settings, t["input"], "after", predictions, skip_partition=bad
    )
    assert before == 60 and 0 < after < 60
    wait_until(
        lambda: committed_offsets(kafka_settings, group_id).get(bad) == first_bad,
        30,
        "the bad partition committed up to its undecodable batch",
    )
    _, metrics = get(port, "/metrics")
    assert (
        f'tagstream_worker_undecodable_batches_total{{partition="{bad}",topic="{t["input"]}"}} 1.0'
        in metrics
    )
    assert (
        len(worker.events("record batch cannot be decoded; partition paused, offset not committed"))
        == 1
    )
    assert worker.process.poll() is None, "the worker died"
    assert committed_offsets(kafka_settings, group_id).get(bad) == first_bad


def python_produce_and_wait(
    kafka: KafkaSettings,
    topic: str,
    prefix: str,
    predictions: TopicReader,
    skip_partition: int | None = None,
) -> int:
    """Send 60 gzip articles; wait until every one that landed on a partition other than
    ``skip_partition`` is predicted. Returns how many that is."""
    ends = end_offsets(kafka, topic)
    python_produce(kafka, topic, "gzip", keyed_articles(prefix, 60, seed=3))
    grown = {p: end - ends[p] for p, end in end_offsets(kafka, topic).items()}
    expected = sum(n for p, n in grown.items() if p != skip_partition)

    def predicted() -> int:
        return sum(1 for r in predictions.snapshot() if r["article_id"].startswith(f"{prefix}-"))

    wait_until(lambda: predicted() >= expected, 60, f"{expected} {prefix!r} articles predicted")
    assert predicted() == expected, "an article of the paused partition was predicted"
    return expected
