"""Scenario 6: a result the broker refuses every time, here a dead letter over its topic's
``max.message.bytes``.

The worker must not rewind and be refused for ever while it looks healthy: after
``refused_retries`` rewinds the dead letter goes out bare (no payload), its neighbours are
predicted and the offsets committed to the end; and where even a bare dead letter is over
the limit the worker stops with a non-zero exit status and one line naming the record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from messaging import Admin, TopicSpec
from tests.reliability.support import record
from tests.worker.harness import InProcess, articles, env_for
from tests.worker.kafka_tools import (
    TopicReader,
    WorkerProcess,
    committed_offsets,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

RETRIES = 2
TOO_LARGE = re.compile("MessageSizeTooLarge|MSG_SIZE_TOO_LARGE")
"""The broker's reason as kafka-python or librdkafka names it (either producer backend)."""


def small_dlq(kafka: KafkaSettings, topics: dict[str, str], max_bytes: int) -> dict[str, str]:
    """``topics`` with its dead-letter topic replaced by one that takes at most ``max_bytes``."""
    name = f"{topics['dlq']}-small"
    with Admin(kafka) as client:
        client.create_topics([TopicSpec(name, 1, max_message_bytes=max_bytes)])
        assert client.topic_configs(name)["max.message.bytes"] == str(max_bytes)
    return topics | {"dlq": name}


def mixed(large_bad: bytes) -> list[tuple[bytes, bytes]]:
    """20 good articles, one message that must be dead-lettered, 20 good articles."""
    good = articles(40)
    return [*good[:20], (b"bad", large_bad), *good[20:]]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_dead_letter_too_large_for_its_topic_goes_out_bare_after_bounded_retries(
    guarantee: str,
    kafka_settings: KafkaSettings,
    topics: Callable[[int], dict[str, str]],
    toy_model: Path,
    in_process: Callable[..., InProcess],
    reader: Callable[..., TopicReader],
    group_id: str,
) -> None:
    t = small_dlq(kafka_settings, topics(1), 4096)
    bad = b"\xff" + os.urandom(30_000)  # not UTF-8; random, so it does not compress under 4 KiB
    produce(kafka_settings, t["input"], mixed(bad), partition=0)
    predictions, letters = reader(t["output"]), reader(t["dlq"])
    worker = in_process(
        t,
        model_path=toy_model,
        processing_guarantee=guarantee,
        refused_retries=RETRIES,
    )
    wait_until(lambda: len(letters.snapshot()) == 1, 90, "the bare dead letter")
    wait_until(lambda: len(predictions.snapshot()) >= 40, 90, "40 predictions")
    wait_until(lambda: committed_offsets(kafka_settings, group_id) == {0: 41}, 60, "commits")
    (letter,) = letters.snapshot()
    assert letter["source"]["offset"] == 20
    assert letter["payload"] == "" and letter["key"] is None
    assert letter["error_kind"] == "internal"
    assert f"refused by the broker: {RETRIES + 1} times" in letter["error_message"]
    assert TOO_LARGE.search(letter["error_message"]), letter["error_message"]
    refusals = worker.metric("publish_failures_total")
    if guarantee == "at_least_once":
        assert refusals == RETRIES + 1, "refused as it is, then rewound: bounded retries"
    else:
        assert worker.metric("transactions_total", outcome="aborted") == RETRIES + 1
    assert worker.metric("refused_results_replaced_total", replacement="bare") == 1
    expected = {f"art-{i}" for i in range(40)}
    if guarantee == "exactly_once":
        assert predictions.ids() == dict.fromkeys(expected, 1)
    else:  # each rewind publishes again what followed the refused record
        assert set(predictions.ids()) == expected
        assert max(predictions.ids().values()) <= RETRIES + 2
    record(
        f"6-refused-dead-letter-{guarantee}",
        produced=41,
        predicted=len(predictions.ids()),
        dead_lettered=1,
        refused_attempts=RETRIES + 1,
    )


def test_a_worker_whose_bare_dead_letter_is_refused_too_exits_non_zero_naming_the_record(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    group_id: str,
) -> None:
    t = small_dlq(kafka_settings, topics(1), 64)
    produce(kafka_settings, t["input"], mixed(b"{broken"), partition=0)
    env = env_for(service_env, t, group_id, model_path=str(toy_model), refused_retries=str(RETRIES))
    worker = processes(env, "worker")
    code = worker.wait(120)
    assert code == 2, "a TagstreamError: error line, exit status 2"
    (line,) = worker.events("every form of this result was refused by the broker; stopping")
    assert (line["partition"], line["offset"]) == (0, 20)
    assert line["refusals"] == RETRIES + 2, "as it is, the retries, then bare"
    assert TOO_LARGE.search(line["error"]), line["error"]
    assert committed_offsets(kafka_settings, group_id).get(0, 0) <= 20
