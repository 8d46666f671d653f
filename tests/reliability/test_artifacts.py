"""Scenario 6: a truncated, then a corrupted artifact promoted while a worker serves.

Truncated: published as it is, so its sha256 matches and only parsing it fails. Corrupted:
a new artifact whose stored chunk is changed in Redis after publication, so the check
against the manifest's sha256 fails (a new one: the worker's disk cache, keyed by sha256,
would serve the intact bytes of one it already holds). Each is refused with one error log
line naming the version, the refusal is counted in ``tagstream_worker_model_refusals_total``,
and the previous model keeps serving; a good version promoted afterwards still takes over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from common.settings import KafkaSettings, RedisSettings
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import toy_artifact
from tests.reliability.support import metrics_port, record, sample_value, scrape
from tests.worker.harness import LABELS, articles, env_for, expected_ids
from tests.worker.kafka_tools import TopicReader, WorkerProcess, produce, wait_until

pytestmark = pytest.mark.integration

REFUSAL = "model version refused, the current one keeps serving"


def test_a_broken_artifact_promoted_is_refused_counted_and_the_old_model_keeps_serving(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    redis_client: redis.Redis,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(2)
    registry = Registry.from_settings(redis_settings, RegistrySettings())
    good = toy_artifact(LABELS)
    first = registry.publish(good.to_bytes(), good.manifest)
    registry.promote(first)
    worker = processes(env_for(service_env, t, group_id), "worker")
    port = metrics_port(worker)
    predictions = reader(t["output"])
    produce(kafka_settings, t["input"], articles(300))
    wait_until(lambda: len(predictions.ids()) == 300, 90, "300 predictions by the first model")

    data = good.to_bytes()
    truncated = registry.publish(data[: len(data) // 2], good.manifest)
    truncated_s = _promote_and_wait_refusal(registry, worker, truncated)

    other = toy_artifact(LABELS, seed=3)  # bytes not in the worker's cache (keyed by sha256)
    corrupted = registry.publish(other.to_bytes(), other.manifest)
    chunk_key = registry.keys.artifact(corrupted)
    chunk = bytearray(redis_client.hget(chunk_key, "0") or b"")
    chunk[len(chunk) // 2] ^= 0xFF
    redis_client.hset(chunk_key, "0", bytes(chunk))
    corrupted_s = _promote_and_wait_refusal(registry, worker, corrupted)

    refusals = sample_value(scrape(port), "tagstream_worker_model_refusals_total")
    produce(kafka_settings, t["input"], articles(300, start=300))
    wait_until(lambda: len(predictions.ids()) == 600, 90, "300 more predictions")
    assert {r["model_version"] for r in predictions.snapshot()} == {first}

    fixed = registry.publish(toy_artifact(LABELS, seed=5).to_bytes(), good.manifest)
    registry.promote(fixed)
    worker.wait_for("model installed", 60, lambda line: line["model_version"] == fixed)
    produce(kafka_settings, t["input"], articles(300, start=600))
    wait_until(lambda: len(predictions.ids()) == 900, 90, "300 predictions by the fixed model")
    registry.close()
    worker.signal(15)
    assert worker.wait() == 0

    lines = {line["refused_version"]: line for line in worker.events(REFUSAL)}
    assert sorted(lines) == [truncated, corrupted]
    assert lines[truncated]["level"] == lines[corrupted]["level"] == "error"
    assert lines[truncated]["model_version"] == lines[corrupted]["model_version"] == first
    assert "sha256" in lines[corrupted]["error"]
    assert refusals == 2
    assert predictions.ids() == expected_ids(900)
    record(
        "6-broken-artifact",
        produced=900,
        predicted=len(predictions.ids()),
        missing=0,
        duplicated=0,
        dead_lettered=0,
        refused={str(v): _short(lines[v]) for v in (truncated, corrupted)},
        refusal_after_promote_s={"truncated": truncated_s, "corrupted": corrupted_s},
        refusals_metric=refusals,
    )


def _promote_and_wait_refusal(registry: Registry, worker: WorkerProcess, version: int) -> float:
    started = time.monotonic()
    registry.promote(version)
    worker.wait_for(REFUSAL, 60, lambda line: line["refused_version"] == version)
    return round(time.monotonic() - started, 2)


def _short(line: dict[str, Any]) -> str:
    return str(line["error"])[:160]
