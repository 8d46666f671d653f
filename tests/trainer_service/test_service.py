"""The trainer service stores labelled articles, retrains, gates, and publishes to Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.ports import free_port
from common.settings import KafkaSettings, RedisSettings
from corpus.jsonl import write_jsonl
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import synthetic_articles
from tagstream import feed
from tests.worker.harness import get
from trainer.datasets import jsonl_datasets
from trainer.service import TrainerService, run_once
from trainer.settings import TrainerSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
LABELS = ("earn", "acq", "crude", "grain")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seed.jsonl"
    write_jsonl(path, synthetic_articles(LABELS, 400, seed=1, prefix="seed"))
    return path


def make_service(
    tmp_path: Path,
    seed_file: Path,
    topic: str,
    group_id: str,
    kafka: KafkaSettings,
    redis_settings: RedisSettings,
    **overrides: object,
) -> TrainerService:
    values = {
        "topic": topic,
        "group_id": group_id,
        "seed_path": seed_file,
        "store_path": tmp_path / "store.db",
        "metrics_port": 0,
    } | overrides
    settings = TrainerSettings(**values)  # type: ignore[arg-type]
    registry = RegistrySettings(cache_dir=tmp_path / "cache")
    return TrainerService(settings, kafka, redis_settings, registry)


def test_serve_stores_feedback_retrains_and_publishes_production(
    tmp_path: Path,
    seed_file: Path,
    topic_factory,
    group_id: str,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
) -> None:
    topic = topic_factory(partitions=2)
    feedback = synthetic_articles(LABELS, 120, seed=2, prefix="feedback")
    feed.produce(kafka_settings, topic, feedback)
    service = make_service(
        tmp_path,
        seed_file,
        topic,
        group_id,
        kafka_settings,
        redis_settings,
        retrain_min_examples=100,
    )
    registry = Registry.from_settings(redis_settings, RegistrySettings(cache_dir=tmp_path / "c"))
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        wait_for(lambda: "production" in registry.aliases(), 240, "a promoted model")
    finally:
        stop.set()
        runner.join(timeout=120)
    version = registry.aliases()["production"]
    manifest = registry.manifest(version)
    assert manifest.training_data.feedback_documents == 120
    assert 0.0 <= manifest.metrics["holdout_micro_f1"] <= 1.0
    assert service.results and service.results[0].reason == "no production model yet"
    registry.close()


def test_a_candidate_worse_than_production_by_more_than_the_margin_is_not_promoted(
    tmp_path: Path,
    seed_file: Path,
    topic_factory,
    group_id: str,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
) -> None:
    topic = topic_factory()
    service = make_service(tmp_path, seed_file, topic, group_id, kafka_settings, redis_settings)
    first = run_once(service)
    assert first.promoted and first.version is not None
    # Wrong labels on every feedback article make the next candidate clearly worse.
    poisoned = [
        a.model_copy(update={"labels": ["grain"] if a.labels != ["grain"] else ["earn"]})
        for a in synthetic_articles(LABELS, 600, seed=3, prefix="poison")
    ]
    feed.produce(kafka_settings, topic, poisoned)
    second = run_once(
        make_service(
            tmp_path,
            seed_file,
            topic,
            group_id,
            kafka_settings,
            redis_settings,
            promotion_margin=0.0,
        )
    )
    assert not second.promoted, second.reason
    registry = Registry.from_settings(redis_settings, RegistrySettings(cache_dir=tmp_path / "c"))
    assert registry.aliases()["production"] == first.version
    registry.close()


def test_datasets_from_a_jsonl_seed_are_carved_by_id_hash(seed_file: Path) -> None:
    data = jsonl_datasets(seed_file)
    ids = [{a.id for a in part} for part in (data.seed, data.validation, data.holdout)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 400
    assert data.labels == sorted(LABELS)


def test_health_says_ready_once_assigned_and_not_alive_when_the_loop_stops(
    tmp_path: Path,
    seed_file: Path,
    topic_factory,
    group_id: str,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
) -> None:
    port = free_port()
    service = make_service(
        tmp_path,
        seed_file,
        topic_factory(partitions=2),
        group_id,
        kafka_settings,
        redis_settings,
        metrics_port=port,
        metrics_host="127.0.0.1",
        stall_timeout_s=1.0,
    )
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "readiness")
        assert get(port, "/readyz")[1].startswith("2 partitions")
        assert get(port, "/healthz")[0] == 200
        assert "tagstream_trainer_examples_stored_total" in get(port, "/metrics")[1]
    finally:
        stop.set()
        runner.join(timeout=60)
    time.sleep(1.2)
    alive, detail = service.alive()
    assert not alive, detail
    assert service.ready() == (False, "no partitions assigned")
