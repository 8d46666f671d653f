"""A worker told to stop while its broker does not answer still stops within its deadline.

The broker of a private stack is frozen (SIGSTOP: connections stay open, nothing answers)
while a worker is in the middle of its stream, so a transaction or a batch of sends is in
flight; a second later the worker gets SIGTERM. It must exit within ``drain_timeout_s`` (plus
a margin for closing its clients and the interpreter's exit), under either guarantee, and commit
nothing past what was published. The broker is then thawed and a second worker (the same
``worker_id``, so exactly-once fences the first one's open transaction) works off the rest:
nothing is missing and, read with ``read_committed``, exactly-once repeats nothing.

Every Kafka client that lives through the freeze is in a worker process (kafka-python leaks
the sockets of failed connection attempts; see test_broker_restart.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaProducer

from common.settings import KafkaSettings
from messaging import client_config, ensure_topics
from messaging.producer import close_kafka_producer
from tagstream.stack import LocalStack, StackState
from tests.reliability.support import describe, private_stack, read_topic, record, tally
from tests.worker.harness import FAST, articles, expected_ids
from tests.worker.kafka_tools import (
    TopicReader,
    WorkerProcess,
    produce,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRAIN_TIMEOUT_S = 10.0
MARGIN_S = 15.0
"""Closing the clients (0.5 s each once the deadline has passed) and the interpreter's exit,
which took 6-7 s on the two-core build box under a load average of 20: generous, because
this is a deadline, not a speed test (before the fix the workers ran 38-41 s)."""
ARTICLES = 6000
TOPICS = {"input": 3, "output": 3, "dlq": 1}


@pytest.fixture(scope="module")
def frozen_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, StackState]]:
    """One private stack for both guarantees (each test uses topics and a group of its own)."""
    with private_stack(tmp_path_factory.mktemp("stack")) as pair:
        yield pair


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_worker_stops_within_its_drain_deadline_while_the_broker_is_frozen(
    guarantee: str,
    frozen_stack: tuple[LocalStack, StackState],
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
) -> None:
    _, state = frozen_stack
    kafka = KafkaSettings(bootstrap=state.kafka_bootstrap)
    names = {role: f"{role}-{guarantee}" for role in TOPICS}
    ensure_topics(kafka, {names[role]: count for role, count in TOPICS.items()})
    produce(kafka, names["input"], articles(ARTICLES))
    env = _worker_env(service_env, state, names, toy_model, guarantee)

    first = processes(env, f"first-{guarantee}")
    wait_until(lambda: _predicted(first) >= 200, 120, "the first worker under way")
    assert _predicted(first) < ARTICLES, "the stream must still be running when the broker stops"
    with _frozen(state.kafka_pid):
        time.sleep(1.0)  # the broker stops answering mid-transaction / mid-batch
        first.signal(signal.SIGTERM)
        exited_s = _exit_time(first, DRAIN_TIMEOUT_S + MARGIN_S + 60)

    second = processes(env, f"second-{guarantee}")
    # The thawed broker takes a while to be a cluster member again; clients of this process
    # wait until the worker (a process of its own) has been assigned and published.
    second.wait_for("partitions assigned", 180, where=lambda line: bool(line["partitions"]))
    second.wait_for("batch", 120)
    predictions = TopicReader(kafka, names["output"])
    try:
        wait_until(lambda: len(predictions.ids()) >= ARTICLES, 180, "every article predicted")
    finally:
        predictions.close()
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0
    records = read_topic(kafka, names["output"])
    counted = tally(
        expected_ids(ARTICLES),
        Counter(r["article_id"] for r in records),
        len(read_topic(kafka, names["dlq"])),
    )
    record(
        "shutdown-with-the-broker-frozen",
        guarantee=guarantee,
        drain_timeout_s=DRAIN_TIMEOUT_S,
        exited_after_sigterm_s=round(exited_s, 1) if exited_s is not None else None,
        first_exit_code=first.process.returncode,
        **counted.figures(),
    )
    assert exited_s is not None and exited_s <= DRAIN_TIMEOUT_S + MARGIN_S, (
        f"the worker exited {exited_s if exited_s is None else round(exited_s, 1)} s after "
        f"SIGTERM; its drain deadline was {DRAIN_TIMEOUT_S} s (+{MARGIN_S} s margin)"
    )
    assert first.events("worker stopped"), "the summary line is the last one, however it ends"
    assert counted.missing == 0, describe(records, expected_ids(ARTICLES))
    assert counted.dead_lettered == 0
    if guarantee == "exactly_once":
        assert counted.duplicated == 0, describe(records, expected_ids(ARTICLES))


def _worker_env(
    service_env: dict[str, str],
    state: StackState,
    names: dict[str, str],
    model: Path,
    guarantee: str,
) -> dict[str, str]:
    values = FAST | {
        "input_topic": names["input"],
        "output_topic": names["output"],
        "dlq_topic": names["dlq"],
        "group_id": f"group-{guarantee}",
        "worker_id": f"frozen-{guarantee}",
        "model_path": str(model),
        "processing_guarantee": guarantee,
        "max_batch_size": "20",
        "drain_timeout_s": str(DRAIN_TIMEOUT_S),
    }
    return (
        service_env
        | {
            "TAGSTREAM_KAFKA_BOOTSTRAP": state.kafka_bootstrap,
            "TAGSTREAM_REDIS_URL": state.redis_url,
        }
        | {f"TAGSTREAM_WORKER_{k.upper()}": v for k, v in values.items()}
    )


@contextmanager
def _frozen(pid: int) -> Iterator[None]:
    """SIGSTOP the broker's process group for the block; SIGCONT it however the block ends."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def _exit_time(worker: WorkerProcess, patience_s: float) -> float | None:
    """Seconds from now until ``worker`` exits; None (and the worker SIGKILLed) if it is still
    running after ``patience_s``."""
    started = time.monotonic()
    try:
        worker.wait(patience_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        return None
    return time.monotonic() - started


def _predicted(worker: WorkerProcess) -> int:
    return sum(line["articles"] for line in worker.events("batch"))


def test_a_producer_closes_within_its_timeout_while_the_broker_holds_its_records(
    frozen_stack: tuple[LocalStack, StackState],
) -> None:
    """kafka-python's own ``close(timeout)`` raises from its flush here and leaves the sender
    running (and its ``__del__`` raises again later, where nobody can catch it).

    Last in the module: the thawed broker is slow to answer again, and nothing follows. The
    producer's requests wait longer than the freeze, so it makes no failed connection
    attempt (whose sockets kafka-python would leak into this process)."""
    _, state = frozen_stack
    kafka = KafkaSettings(bootstrap=state.kafka_bootstrap)
    ensure_topics(kafka, {"close-while-frozen": 1})
    producer = KafkaProducer(
        **client_config(kafka), acks="all", linger_ms=0, request_timeout_ms=120_000
    )
    try:
        producer.send("close-while-frozen", value=b"answered").get(timeout=60)
        with _frozen(state.kafka_pid):
            held = producer.send("close-while-frozen", value=b"held")
            started = time.monotonic()
            close_kafka_producer(producer, 1.0)
            took_s = time.monotonic() - started
    finally:
        close_kafka_producer(producer, 1.0)
    assert took_s < 5.0
    assert producer._closed
    assert not producer._sender.is_alive()
    assert held.is_done
    assert held.failed()
