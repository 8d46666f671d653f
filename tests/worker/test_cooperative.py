"""Scaling 1 -> 3 -> 1 workers under the ``cooperative-sticky`` assignor (KIP-429).

Articles keep arriving while two workers join and then leave. Nothing may be lost; under
exactly-once (read back ``read_committed``) nothing may be repeated either. Under the
cooperative protocol the first worker gives up only the partitions that move, so its first
revocation holds fewer than all six of its partitions (the range assignor revokes all).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.settings import KafkaSettings
from tests.worker.harness import articles, env_for, expected_ids
from tests.worker.kafka_tools import (
    Feeding,
    TopicReader,
    WorkerProcess,
    explain_missing,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def assigned(worker: WorkerProcess) -> set[int]:
    """The partitions ``worker`` holds now, from its assignment and revocation log lines."""
    held: set[int] = set()
    for line in worker.lines():
        if line.get("event") == "partitions assigned":
            held |= set(line["partitions"])
        elif line.get("event") in ("partitions revoked", "partitions lost"):
            held -= set(line["partitions"])
    return held


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_scaling_one_to_three_to_one_under_cooperative_sticky_loses_and_repeats_nothing(
    guarantee: str,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(6)
    total, phases = 3600, 3
    stream = articles(total)
    predictions = reader(t["output"])

    def env(name: str) -> dict[str, str]:
        return env_for(
            service_env,
            t,
            group_id,
            model_path=str(toy_model),
            processing_guarantee=guarantee,
            assignor="cooperative-sticky",
            worker_id=name,
            max_batch_size="16",
        )

    def feed(part: int) -> Feeding:
        size = total // phases
        return Feeding(kafka_settings, t["input"], stream[part * size : (part + 1) * size], 300.0)

    first = processes(env("first"), "first")
    wait_until(lambda: len(assigned(first)) == 6, 90, "the first worker holding all six")
    feeding = feed(0)
    wait_until(lambda: len(predictions.ids()) >= 300, 60, "300 predictions by the first worker")
    joiners = [processes(env(name), name) for name in ("second", "third")]
    wait_until(
        lambda: all(len(assigned(w)) == 2 for w in (first, *joiners)),
        120,
        "three workers with two partitions each",
    )
    feeding.join()
    feed(1).join()  # the three share the stream
    for joiner in joiners:
        joiner.signal(signal.SIGTERM)
    for joiner in joiners:
        assert joiner.wait(60) == 0
    wait_until(lambda: len(assigned(first)) == 6, 120, "the first worker holding all six again")
    feed(2).join()
    wait_until(
        lambda: len(predictions.ids()) == total,
        120,
        "every article predicted",
        lambda: explain_missing(kafka_settings, t, group_id, predictions, expected_ids(total)),
    )
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 0

    counts = predictions.ids()
    assert set(counts) == set(expected_ids(total)), "articles lost"
    if guarantee == "exactly_once":
        repeated = sorted(
            (r["article_id"], r["worker_id"], r["source"]["partition"], r["source"]["offset"])
            for r in predictions.snapshot()
            if counts[r["article_id"]] > 1
        )
        assert not repeated, f"repeated under exactly-once: {repeated[:20]}"
    assert {r["worker_id"] for r in predictions.snapshot()} == {"first", "second", "third"}
    revocations = [e["partitions"] for e in first.events("partitions revoked") if e["partitions"]]
    assert revocations, "the first worker never gave a partition up"
    assert len(revocations[0]) < 6, f"not cooperative: the first revocation took {revocations[0]}"
