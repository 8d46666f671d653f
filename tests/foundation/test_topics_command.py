"""``tagstream topics create|describe|lag`` against the project's own Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from messaging.admin import admin
from tests.worker.kafka_tools import produce

pytestmark = pytest.mark.integration
TAGSTREAM = str(Path(sys.executable).parent / "tagstream")


def run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [TAGSTREAM, "topics", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_create_takes_sizes_from_settings_is_idempotent_and_lag_counts_the_backlog(
    kafka_settings: KafkaSettings,
) -> None:
    run_id = uuid.uuid4().hex[:8]
    names = {
        "TAGSTREAM_WORKER_INPUT_TOPIC": f"t{run_id}.in",
        "TAGSTREAM_WORKER_OUTPUT_TOPIC": f"t{run_id}.out",
        "TAGSTREAM_WORKER_DLQ_TOPIC": f"t{run_id}.dlq",
        "TAGSTREAM_TRAINER_TOPIC": f"t{run_id}.labelled",
        "TAGSTREAM_WORKER_GROUP_ID": f"g{run_id}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env |= names | {
        "TAGSTREAM_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
        "TAGSTREAM_TOPICS_INPUT_PARTITIONS": "3",
        "TAGSTREAM_TOPICS_REPLICATION_FACTOR": "1",
        "TAGSTREAM_TOPICS_MIN_INSYNC_REPLICAS": "1",
        "TAGSTREAM_TOPICS_RETENTION_MS": "3600000",
    }
    first = run(env, "create")
    assert f"created  t{run_id}.in partitions=3" in first
    assert first.count("created") == 4
    assert run(env, "create").count("exists") == 4

    with admin(kafka_settings) as client:
        described = client.describe([f"t{run_id}.in"])
        configs = client.topic_configs(f"t{run_id}.in")
    assert len(described) == 3
    assert configs["retention.ms"] == "3600000"
    assert configs["min.insync.replicas"] == "1"
    shown = run(env, "describe")
    assert f"t{run_id}.in: 3 partitions" in shown and "retention.ms=3600000" in shown

    produce(kafka_settings, f"t{run_id}.in", [(b"k", b"v")] * 7, partition=1)
    lag = run(env, "lag")
    assert "partition 1: committed - end 7 lag 7" in lag
    assert lag.strip().endswith("total lag 7")
