"""``tagstream replay`` against the real Kafka and Redis: ranges, the chosen version, and the
live group's offsets left alone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.settings import KafkaSettings, RedisSettings
from model.artifact import Artifact
from model.inference import Classifier
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import toy_artifact
from schemas import Article
from tests.worker.harness import LABELS, InProcess, articles, expected_ids
from tests.worker.kafka_tools import TopicReader, committed_offsets, produce, wait_until

pytestmark = pytest.mark.integration
TAGSTREAM = str(Path(sys.executable).parent / "tagstream")


def replay(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [TAGSTREAM, "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def versions(redis_settings: RedisSettings) -> Any:
    """v1 promoted to production, v2 (other weights) published but serving nowhere."""
    registry = Registry.from_settings(redis_settings, RegistrySettings())
    first, second = toy_artifact(LABELS), toy_artifact(LABELS, seed=7)
    v1 = registry.publish(first.to_bytes(), first.manifest)
    registry.promote(v1)
    v2 = registry.publish(second.to_bytes(), second.manifest)
    registry.close()
    return v1, v2, second


def test_replay_rescoring_the_whole_topic_with_another_version_leaves_the_group_alone(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    topic_factory: Callable[..., str],
    reader: Callable[..., TopicReader],
    in_process: Callable[..., InProcess],
    group_id: str,
    versions: Any,
) -> None:
    v1, v2, second = versions
    t = topics(2)
    produce(kafka_settings, t["input"], articles(300))
    produce(kafka_settings, t["input"], [(b"bad", b"{not json")])
    live = reader(t["output"])
    worker = in_process(t)
    wait_until(lambda: len(live.ids()) == 300, 90, "the live worker predicted everything")
    wait_until(
        lambda: sum(committed_offsets(kafka_settings, group_id).values()) == 301,
        30,
        "the live worker committed everything",
    )
    worker.stop()
    committed = committed_offsets(kafka_settings, group_id)

    out = topic_factory(2, "replayed")
    env = service_env | {
        "TAGSTREAM_WORKER_INPUT_TOPIC": t["input"],
        "TAGSTREAM_WORKER_GROUP_ID": group_id,
    }
    printed = replay(env, "--version", str(v2), "--output", out)

    replayed = reader(out)
    letters = reader(f"{out}.dlq")
    wait_until(
        lambda: len(replayed.ids()) == 300 and len(letters.snapshot()) == 1,
        30,
        "300 replayed predictions and one dead letter",
    )
    time.sleep(1)  # anything extra would have arrived by now
    assert replayed.ids() == expected_ids(300)  # each exactly once
    assert "replayed 301 records" in printed and "300 predicted, 1 dead-lettered" in printed
    records = replayed.snapshot()
    assert {r["model_version"] for r in records} == {v2}
    assert all(r["worker_id"].startswith("replay-") for r in records)
    assert letters.snapshot()[0]["error_kind"] == "decode"
    assert {r["model_version"] for r in live.snapshot()} == {v1}
    assert committed_offsets(kafka_settings, group_id) == committed  # the live group untouched

    # The replay's labels are what v2 says about each article on its own.
    model = Classifier.from_artifact(Artifact.from_bytes(second.to_bytes()), version=v2)
    by_id = {r["article_id"]: r for r in records}
    for key, value in articles(300)[:40]:
        article = Article.model_validate_json(value)
        row = np.asarray(model.scores(model.encode([article.text])))[0]
        expected = [name for name, _ in model.decide(row)]
        assert [label["name"] for label in by_id[key.decode()]["labels"]] == expected


def test_replay_of_an_offset_range_and_of_a_time_range(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topic_factory: Callable[..., str],
    reader: Callable[..., TopicReader],
    versions: Any,
) -> None:
    _, v2, _ = versions
    source = topic_factory(2, "in")
    produce(kafka_settings, source, articles(100), partition=0)
    produce(kafka_settings, source, articles(50, start=100), partition=1)
    time.sleep(1.0)
    boundary = datetime.now(UTC)
    time.sleep(1.0)
    produce(kafka_settings, source, articles(30, start=150), partition=1)
    env = service_env | {"TAGSTREAM_WORKER_INPUT_TOPIC": source}

    by_offset = topic_factory(1, "by-offset")
    replay(
        env,
        "--version",
        str(v2),
        "--output",
        by_offset,
        "--from",
        "0:10",
        "--to",
        "0:20",
        "--to",
        "1:5",
    )
    got = reader(by_offset)
    wait_until(lambda: len(got.ids()) == 15, 30, "15 replayed predictions")
    time.sleep(1)
    sources = sorted((r["source"]["partition"], r["source"]["offset"]) for r in got.snapshot())
    assert sources == [(0, o) for o in range(10, 20)] + [(1, o) for o in range(5)]

    by_time = topic_factory(1, "by-time")
    printed = replay(
        env, "--alias", "production", "--output", by_time, "--since", boundary.isoformat()
    )
    timed = reader(by_time)
    wait_until(lambda: len(timed.ids()) == 30, 30, "the 30 articles sent after the boundary")
    time.sleep(1)
    assert timed.ids() == expected_ids(30, start=150)
    assert "replayed 30 records" in printed
