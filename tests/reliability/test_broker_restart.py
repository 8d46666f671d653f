"""Scenario 2: the broker is stopped mid-stream and started again.

A stack of the test's own (the session's broker serves other tests). Two workers and the
trainer run throughout; articles and labelled articles keep arriving at a steady rate from
``tagstream produce`` processes, which ride out the outage on their retries. Nobody is
restarted: workers and trainer reconnect by themselves, every article is predicted, every
labelled article stored once.

Every Kafka client that lives through the outage runs in a process of its own, so nothing a
client leaves behind in an outage (kafka-python 3.0.12 left failed attempts' sockets open
until ``messaging.sockets``) can surface as a ResourceWarning in whichever test collects it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from corpus.jsonl import write_jsonl
from messaging import ensure_topics
from model.toy import synthetic_articles
from tests.reliability.support import (
    Scale,
    current_scale,
    describe,
    longest_gap_s,
    private_stack,
    read_topic,
    record,
    settled,
    stored_ids,
    tally,
    timestamp,
    trainer_env,
)
from tests.worker.harness import FAST, LABELS, expected_ids
from tests.worker.kafka_tools import TopicReader, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GUARANTEES = (
    ["at_least_once", "exactly_once"] if current_scale().name == "long" else ["exactly_once"]
)
"""CI runs the stricter guarantee (nothing missing, nothing twice); ``make chaos`` both."""

TOPICS = {"input": 6, "output": 3, "dlq": 1, "labelled": 2}
TAGSTREAM = [sys.executable, "-m", "tagstream"]


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_workers_and_trainer_reconnect_after_a_broker_restart_and_lose_nothing(
    guarantee: str,
    scale: Scale,
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    total, labelled = scale.restart_articles, scale.restart_articles // 10
    rate = total / (scale.broker_down_s + 20)
    with private_stack(tmp_path / "stack") as (local, state):
        kafka = KafkaSettings(bootstrap=state.kafka_bootstrap)
        ensure_topics(kafka, TOPICS)
        env = service_env | {
            "TAGSTREAM_KAFKA_BOOTSTRAP": state.kafka_bootstrap,
            "TAGSTREAM_REDIS_URL": state.redis_url,
        }
        workers = [
            processes(_worker_env(env, toy_model, guarantee, slot), f"worker-{slot}")
            for slot in range(2)
        ]
        trainer = processes(
            trainer_env(env, tmp_path, 100, retrain_min_examples="1000000"),  # stores only
            "trainer",
            [*TAGSTREAM, "trainer", "serve"],
        )
        for worker in workers:
            worker.wait_for("partitions assigned", 120)
        feeds = [
            _feed(processes, env, tmp_path, "input", total, rate),
            _feed(processes, env, tmp_path, "labelled", labelled, rate / 10),
        ]
        wait_until(lambda: _predicted(workers) >= rate * 5, 60, "the stream under way")

        stopped_at = time.time()
        local.stop_kafka()
        threading.Event().wait(scale.broker_down_s)  # the outage itself: nothing to poll for
        local.start_kafka()
        restarted_at = time.time()

        assert [feed.wait(scale.patience_s) for feed in feeds] == [0, 0]
        predictions = TopicReader(kafka, "output")
        try:
            settled(lambda: len(predictions.ids()) >= total, scale.patience_s)
        finally:
            predictions.close()
        store = tmp_path / "store.db"
        wait_until(lambda: len(stored_ids(store)) >= labelled, scale.patience_s, "all stored")
        for process in [*workers, trainer]:
            process.signal(15)
        codes = [process.wait(120) for process in [*workers, trainer]]
        records = read_topic(kafka, "output")
        dead = len(read_topic(kafka, "dlq"))
        inputs = len(read_topic(kafka, "input"))  # more than produced: the input repeats
        stored = stored_ids(store)
    counted = tally(expected_ids(total), Counter(r["article_id"] for r in records), dead)
    record(
        "2-broker-restart",
        guarantee=guarantee,
        offered_rate=round(rate),
        broker_down_s=round(restarted_at - stopped_at, 1),
        first_batch_after_restart_s={
            w.log_path.stem: _first_batch_after(w, restarted_at) for w in workers
        },
        longest_prediction_gap_s=round(longest_gap_s(records), 1),
        input_records=inputs,
        labelled_produced=labelled,
        labelled_stored=len(stored),
        **counted.figures(),
    )
    assert codes == [0, 0, 0], "workers and trainer ran through and stopped cleanly"
    assert counted.missing == 0, describe(records, expected_ids(total))
    assert counted.dead_lettered == 0
    if guarantee == "exactly_once":
        assert counted.duplicated == 0, describe(records, expected_ids(total))
    assert len(stored) == labelled


def _feed(
    processes: Callable[..., WorkerProcess],
    env: dict[str, str],
    tmp_path: Path,
    topic: str,
    count: int,
    rate: float,
) -> WorkerProcess:
    """``tagstream produce`` of ``count`` articles (``art-0``... on ``input``, labelled ones
    ``lab-0``... on ``labelled``) at ``rate`` per second, in a process of its own."""
    prefix = "art" if topic == "input" else "lab"
    made = synthetic_articles(LABELS, count, seed=4, prefix=prefix)
    path = tmp_path / f"{topic}.jsonl"
    write_jsonl(path, (a.model_copy(update={"id": f"{prefix}-{i}"}) for i, a in enumerate(made)))
    command = [*TAGSTREAM, "produce", "--file", str(path), "--topic", topic, "--rate", str(rate)]
    if topic == "labelled":
        command.append("--labelled")
    return processes(env, f"produce-{topic}", command)


def _predicted(workers: list[WorkerProcess]) -> int:
    return sum(line["articles"] for worker in workers for line in worker.events("batch"))


def _worker_env(env: dict[str, str], model: Path, guarantee: str, slot: int) -> dict[str, str]:
    values = FAST | {
        "input_topic": "input",
        "output_topic": "output",
        "dlq_topic": "dlq",
        "group_id": "workers",
        "worker_id": f"slot-{slot}",
        "model_path": str(model),
        "processing_guarantee": guarantee,
    }
    return env | {f"TAGSTREAM_WORKER_{k.upper()}": v for k, v in values.items()}


def _first_batch_after(worker: WorkerProcess, wall_time: float) -> float | None:
    """Seconds from ``wall_time`` to the worker's first batch logged after it."""
    times = [timestamp(line["timestamp"]) for line in worker.events("batch")]
    later = [t for t in times if t > wall_time]
    return round(min(later) - wall_time, 1) if later else None
