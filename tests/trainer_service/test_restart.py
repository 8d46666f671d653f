"""A trainer killed mid-cycle and restarted loses no stored example and stores none twice."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from corpus.jsonl import write_jsonl
from model.toy import synthetic_articles
from tagstream import feed

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
LABELS = ("earn", "acq", "crude", "grain")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def stored_ids(store: Path) -> list[str]:
    if not store.exists():
        return []
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT article_id FROM examples")]


def test_sigkill_mid_cycle_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path,
    topic_factory,
    group_id: str,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
) -> None:
    topic = topic_factory(partitions=2)
    seed = tmp_path / "seed.jsonl"
    write_jsonl(seed, synthetic_articles(LABELS, 300, seed=1, prefix="seed"))
    store = tmp_path / "store.db"
    log = tmp_path / "trainer.log"
    env = service_env | {
        "TAGSTREAM_TRAINER_TOPIC": topic,
        "TAGSTREAM_TRAINER_GROUP_ID": group_id,
        "TAGSTREAM_TRAINER_SEED_PATH": str(seed),
        "TAGSTREAM_TRAINER_STORE_PATH": str(store),
        "TAGSTREAM_TRAINER_RETRAIN_MIN_EXAMPLES": "100",
        "TAGSTREAM_TRAINER_METRICS_PORT": "0",
    }

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "tagstream", "trainer", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    first_batch = synthetic_articles(LABELS, 150, seed=2, prefix="first")
    feed.produce(kafka_settings, topic, first_batch)
    trainer = start()
    try:
        wait_for(lambda: "cycle started" in log.read_text(), 120, "a cycle to start")
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        assert len(stored_ids(store)) == 150
        second_batch = synthetic_articles(LABELS, 80, seed=3, prefix="second")
        feed.produce(kafka_settings, topic, second_batch)
        trainer = start()
        wait_for(lambda: len(stored_ids(store)) >= 230, 120, "the second batch to be stored")
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(180) == 0, log.read_text()[-2000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    ids = stored_ids(store)
    assert sorted(ids) == sorted(a.id for a in first_batch + second_batch)
