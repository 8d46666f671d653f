"""Scenario 1: three workers, one SIGKILLed at random every few seconds and restarted.

Articles arrive at a steady rate for as long as the kills go on, so every kill lands on a
worker with work in flight. Membership is dynamic (no ``group_instance_id``): each kill
costs the survivors a session timeout and two rebalances. The restarted worker keeps its
slot's ``worker_id``, hence its transactional id, and fences its predecessor.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from tests.reliability.support import (
    Feeder,
    Fleet,
    Scale,
    describe,
    endless_articles,
    longest_gap_s,
    read_topic,
    record,
    tally,
)
from tests.worker.harness import env_for, expected_ids
from tests.worker.kafka_tools import TopicReader, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_workers_killed_at_random_lose_nothing_and_exactly_once_repeats_nothing(
    guarantee: str,
    scale: Scale,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    """At-least-once: every article predicted, duplicates counted. Exactly-once, read with
    read_committed: every article predicted exactly once."""
    t = topics(6)
    env = env_for(
        service_env,
        t,
        group_id,
        model_path=str(toy_model),
        processing_guarantee=guarantee,
        max_batch_size="16",
        commit_interval_ms="100",
    )
    predictions = reader(t["output"])
    fleet = Fleet(env, tmp_path, slots=3)
    try:
        fleet.wait_assigned()
        rate = scale.crash_articles / (scale.crash_kills * scale.crash_interval_s)
        feeder = Feeder(kafka_settings, t["input"], endless_articles(), rate).start()
        killed = _kill_on_schedule(fleet, random.Random(guarantee), scale)
        wait_until(lambda: feeder.sent >= scale.crash_articles, scale.patience_s, "the stream")
        feeder.stop()
        total = feeder.join()
        drained_s = _wait_all_predicted(predictions, total, scale)
        fleet.wait_assigned()  # the last restarted worker is up, not killed while importing
        codes = fleet.terminate()
    finally:
        fleet.close()
    assert codes == [0, 0, 0], fleet.tails()
    records = read_topic(kafka_settings, t["output"])
    counted = tally(
        expected_ids(total),
        Counter(r["article_id"] for r in records),
        len(read_topic(kafka_settings, t["dlq"])),
    )
    inputs = len(read_topic(kafka_settings, t["input"]))  # more than produced: input repeats
    record(
        "1-worker-crashes",
        guarantee=guarantee,
        kills=len(fleet.kills),
        killed_slots=killed,
        mean_kill_interval_s=round(_mean_interval(fleet.kills), 1),
        offered_rate=round(feeder.offered_rate),
        input_records=inputs,
        longest_prediction_gap_s=round(longest_gap_s(records), 2),
        drained_after_feed_s=round(drained_s, 1),
        **counted.figures(),
    )
    assert len(fleet.kills) == scale.crash_kills
    assert counted.missing == 0, describe(records, expected_ids(total))
    assert counted.dead_lettered == 0
    if guarantee == "exactly_once":
        assert counted.duplicated == 0, describe(records, expected_ids(total))


def test_a_worker_frozen_past_its_session_rejoins_from_the_committed_offsets(
    scale: Scale,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    """A zombie: slot-0 is stopped (SIGSTOP) longer than its session timeout, the group
    gives its partitions to slot-1, which predicts and commits them; then slot-0 is thawed,
    finds its membership lost, rejoins and (sorting first by client id) gets the same
    partitions back. It must start them from the committed offsets, not from where it was
    frozen: exactly-once, read_committed, nothing twice."""
    t = topics(6)
    env = env_for(
        service_env,
        t,
        group_id,
        model_path=str(toy_model),
        processing_guarantee="exactly_once",
        max_batch_size="16",
    )
    predictions = reader(t["output"])
    fleet = Fleet(env, tmp_path, slots=2)
    try:
        fleet.wait_assigned()
        zombie, survivor = fleet.current
        feeder = Feeder(kafka_settings, t["input"], endless_articles(), 100).start()
        wait_until(lambda: len(predictions.ids()) >= 300, 60, "the stream under way")
        assigned_before = len(survivor.events("partitions assigned"))
        zombie.signal(signal.SIGSTOP)
        wait_until(
            lambda: _assignments_since(survivor, assigned_before)[-1:] == [6],
            60,
            "the survivor holding all six partitions",
        )
        taken_over = len(predictions.ids())
        # read_committed readers wait behind the zombie's open transaction until the broker
        # aborts it (transaction.timeout.ms, 60 s from its start), so 60 s here was a coin toss
        # on a loaded machine.
        wait_until(lambda: len(predictions.ids()) >= taken_over + 300, 120, "the survivor works")
        zombie_assigned = len(zombie.events("partitions assigned"))
        zombie.signal(signal.SIGCONT)
        zombie.wait_for("partitions lost", 60)
        wait_until(
            lambda: any(_assignments_since(zombie, zombie_assigned)), 60, "the zombie rejoined"
        )
        back = zombie.events("partitions assigned")[-1]
        rejoined = len(predictions.ids())
        wait_until(lambda: len(predictions.ids()) >= rejoined + 300, 60, "both work again")
        feeder.stop()
        total = feeder.join()
        wait_until(lambda: len(predictions.ids()) >= total, scale.patience_s, "all predicted")
        codes = fleet.terminate()
    finally:
        fleet.close()
    records = read_topic(kafka_settings, t["output"])
    counted = tally(expected_ids(total), Counter(r["article_id"] for r in records))
    aborts = zombie.events("transaction aborted; its partitions will be rewound")
    aborted = [str(e["error"]) for e in aborts]
    record(
        "1b-frozen-worker",
        partitions_back=back["partitions"],
        zombie_aborts_fenced=sum("UnknownMemberIdError" in e for e in aborted),
        zombie_aborts_without_membership=sum("membership was reset" in e for e in aborted),
        **counted.figures(),
    )
    assert codes == [0, 0], fleet.tails()
    assert back["partitions"] == [0, 1, 2], "its own partitions back: what tells a stale start"
    assert counted.missing == 0, describe(records, expected_ids(total))
    assert counted.duplicated == 0, describe(records, expected_ids(total))


def _assignments_since(worker: WorkerProcess, seen: int) -> list[int]:
    """How many partitions each assignment after the first ``seen`` ones gave ``worker``."""
    return [len(line["partitions"]) for line in worker.events("partitions assigned")[seen:]]


def _kill_on_schedule(fleet: Fleet, rng: random.Random, scale: Scale) -> list[int]:
    """A kill (and restart) every ``crash_interval_s`` or, while restarts are slow, as soon
    as a victim qualifies; returns the slots hit, in order."""
    pause = threading.Event()
    slots = []
    for _ in range(scale.crash_kills):
        pause.wait(scale.crash_interval_s)
        slots.append(fleet.kill_and_restart(rng, scale.patience_s))
    return slots


def _wait_all_predicted(predictions: TopicReader, total: int, scale: Scale) -> float:
    """Seconds from the end of the feed until every article has a prediction."""
    started = time.monotonic()
    wait_until(lambda: len(predictions.ids()) >= total, scale.patience_s, "every article predicted")
    return time.monotonic() - started


def _mean_interval(kills: list[tuple[int, float]]) -> float:
    times = [t for _, t in kills]
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
