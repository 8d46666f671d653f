"""Scenario 3: Redis goes away mid-stream and comes back.

A stack of the test's own. The worker serves the registry's ``production`` model; the
trainer stores labelled articles and retrains once 100 new ones arrived. Redis stops while
articles stream; during the outage more labelled articles arrive, so a cycle falls due and
cannot take its Redis lock. Meanwhile the worker keeps predicting with the model it holds
and the trainer keeps storing (its store is local). When Redis returns the trainer's retry
succeeds, it promotes, and the worker swaps to the new version: everything resumed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.settings import KafkaSettings, RedisSettings
from messaging import ensure_topics
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import synthetic_articles, toy_artifact
from schemas import LabelledArticle
from tests.reliability.support import (
    Feeder,
    Scale,
    endless_articles,
    private_stack,
    read_topic,
    record,
    stored_ids,
    tally,
    timestamp,
    trainer_env,
)
from tests.worker.harness import FAST, LABELS, expected_ids
from tests.worker.kafka_tools import TopicReader, WorkerProcess, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = {"input": 4, "output": 3, "dlq": 1, "labelled": 1}
RETRAIN_AFTER = 100


def test_workers_keep_predicting_and_the_trainer_keeps_storing_through_a_redis_outage(
    scale: Scale,
    service_env: dict[str, str],
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    with private_stack(tmp_path / "stack") as (local, state):
        kafka = KafkaSettings(bootstrap=state.kafka_bootstrap)
        ensure_topics(kafka, TOPICS)
        env = service_env | {
            "TAGSTREAM_KAFKA_BOOTSTRAP": state.kafka_bootstrap,
            "TAGSTREAM_REDIS_URL": state.redis_url,
        }
        first = _publish_first_model(env)
        worker = processes(_worker_env(env), "worker")
        trainer = processes(
            trainer_env(env, tmp_path, 300, retrain_min_examples=str(RETRAIN_AFTER)),
            "trainer",
            [sys.executable, "-m", "tagstream", "trainer", "serve"],
        )
        store = tmp_path / "store.db"
        labelled = synthetic_articles(LABELS, 150, seed=6, prefix="lab")
        produce(kafka, "labelled", _pairs(labelled[:50]))
        wait_until(lambda: len(stored_ids(store)) == 50, 120, "50 labelled articles stored")
        worker.wait_for("partitions assigned", 120)

        predictions = TopicReader(kafka, "output")
        rate = scale.outage_articles / (scale.redis_down_s + 20)
        feeder = Feeder(kafka, "input", endless_articles(), rate).start()
        try:
            wait_until(lambda: len(predictions.ids()) >= rate * 3, 60, "the stream under way")
            down_at = time.time()
            local.stop_redis()
            produce(kafka, "labelled", _pairs(labelled[50:]))
            stored_during = _wait_stored(store, 150, scale)
            failed = trainer.wait_for("cycle failed", 60)
            threading.Event().wait(max(0.0, down_at + scale.redis_down_s - time.time()))
            predicted_during = _classified_between(predictions, down_at, time.time())
            local.start_redis()
            up_at = time.time()

            cycle = trainer.wait_for("cycle", 240)
            swapped = worker.wait_for(
                "model installed", 60, lambda line: line["model_version"] == cycle["version"]
            )
            wait_until(lambda: feeder.sent >= scale.outage_articles, scale.patience_s, "stream")
            feeder.stop()
            total = feeder.join()
            wait_until(lambda: len(predictions.ids()) >= total, scale.patience_s, "all predicted")
        finally:
            predictions.close()
        for process in (worker, trainer):
            process.signal(15)
        codes = [worker.wait(60), trainer.wait(120)]
        records = read_topic(kafka, "output")
        dead = len(read_topic(kafka, "dlq"))
        stored = stored_ids(store)

    counted = tally(expected_ids(total), Counter(r["article_id"] for r in records), dead)
    failures = trainer.events("cycle failed")
    record(
        "3-redis-outage",
        redis_down_s=round(up_at - down_at, 1),
        predicted_during_outage=predicted_during,
        labelled_produced=len(labelled),
        labelled_stored=len(stored),
        labelled_stored_during_outage=stored_during,
        cycle_attempts_failed=len(failures),
        first_failure=str(failed["error"])[:120],
        cycle_after_redis_back_s=round(timestamp(cycle["timestamp"]) - up_at, 1),
        worker_swapped_after_redis_back_s=round(timestamp(swapped["timestamp"]) - up_at, 1),
        versions={"before": first, "after": cycle["version"]},
        **counted.figures(),
    )
    assert codes == [0, 0]
    assert counted.missing == 0
    assert predicted_during > 0, "the worker predicted while Redis was down"
    assert stored_during == len(labelled), "the trainer stored while Redis was down"
    assert sorted(stored) == sorted(a.id for a in labelled)
    assert cycle["promoted"], cycle
    assert {r["model_version"] for r in records} == {first, cycle["version"]}


def _publish_first_model(env: dict[str, str]) -> int:
    redis = RedisSettings(
        url=env["TAGSTREAM_REDIS_URL"], namespace=env["TAGSTREAM_REDIS_NAMESPACE"]
    )
    with Registry.from_settings(redis, RegistrySettings()) as registry:
        artifact = toy_artifact(LABELS)
        version = registry.publish(artifact.to_bytes(), artifact.manifest)
        registry.promote(version)
    return version


def _wait_stored(store: Path, count: int, scale: Scale) -> int:
    wait_until(lambda: len(stored_ids(store)) >= count, scale.patience_s, f"{count} stored")
    return len(stored_ids(store))


def _classified_between(predictions: TopicReader, start: float, end: float) -> int:
    """Predictions made between two wall-clock times (by their ``classified_at``)."""
    wait_until(lambda: _latest(predictions) >= end - 2, 30, "predictions of the outage read")
    return sum(1 for p in predictions.snapshot() if start <= timestamp(p["classified_at"]) <= end)


def _latest(predictions: TopicReader) -> float:
    return max((timestamp(p["classified_at"]) for p in predictions.snapshot()), default=0.0)


def _worker_env(env: dict[str, str]) -> dict[str, str]:
    values: dict[str, Any] = FAST | {
        "input_topic": "input",
        "output_topic": "output",
        "dlq_topic": "dlq",
        "group_id": "workers",
        "worker_id": "worker",
    }
    return env | {f"TAGSTREAM_WORKER_{k.upper()}": str(v) for k, v in values.items()}


def _pairs(articles: list[LabelledArticle]) -> list[tuple[bytes, bytes]]:
    return [(a.id.encode(), a.model_dump_json().encode()) for a in articles]
