"""The worker against the real Apache Kafka and Redis the project starts (tests/conftest.py).

In-process workers (a thread running :class:`worker.app.Worker`) where the test needs the
worker's metrics; real ``python -m worker`` processes where it needs signals, SIGKILL or
several processes. Every test has its own topics and consumer group.
"""

from __future__ import annotations

import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.settings import KafkaSettings, RedisSettings
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import toy_artifact
from tests.worker.harness import LABELS, InProcess, articles, env_for, expected_ids, get
from tests.worker.kafka_tools import (
    Feeding,
    TopicReader,
    WorkerProcess,
    alive,
    child_pids,
    committed_offsets,
    explain_missing,
    produce,
    produce_steadily,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_one_worker_predicts_2000_articles_each_exactly_once(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    in_process: Callable[..., InProcess],
) -> None:
    t = topics(3)
    produce(kafka_settings, t["input"], articles(2000))
    predictions = reader(t["output"])
    worker = in_process(t, model_path=toy_model)
    try:
        wait_until(lambda: len(predictions.ids()) == 2000, 120, "2000 predictions")
        wait_until(
            lambda: sum(committed_offsets(kafka_settings, group_id).values()) == 2000,
            30,
            "offsets committed to the end",
        )
        port = worker.worker.health_port
        assert get(port, "/healthz")[0] == 200
        # A rejoin (a metadata refresh can start one) empties the assignment for a moment;
        # what the test means is that the worker ends up serving all three partitions.
        wait_until(
            lambda: get(port, "/readyz") == (200, "model 1, 3 partitions\n"),
            60,
            "ready with all three partitions",
        )
        assert worker.metric("rebalance_events_total", event="lost") == 0
        status, metrics = get(port, "/metrics")
        assert status == 200
        assert "tagstream_worker_predictions_published_total 2000.0" in metrics
        assert "tagstream_worker_padding_ratio_bucket" in metrics
    finally:
        worker.stop()
    assert predictions.ids() == expected_ids(2000)
    one = predictions.snapshot()[0]
    assert one["model_version"] == 1
    assert {label["name"] for label in one["labels"]} <= set(LABELS)
    assert worker.metric("predictions_published_total") == 2000
    assert worker.metric("batch_articles_count") >= 2000 / 64


def test_bad_messages_in_a_batch_go_to_the_dead_letter_topic_and_neighbours_are_predicted(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    in_process: Callable[..., InProcess],
) -> None:
    t = topics(1)
    good = articles(40)
    bad: dict[int, tuple[bytes | None, bytes | None]] = {
        3: (b"k3", b"\xff\xfe not utf-8"),
        9: (b"k9", b'{"id": null, "body": "x"}'),
        10: (None, b'{"id": "x", "body": "' + b"w" * 300_000 + b'"}'),
        17: (b"k17", None),
        25: (b"k25", b'{"id": "e", "title": "", "body": ""}'),
        31: (b"k31", b"[" * 10_000),
    }
    values = [bad.get(i, good[i]) for i in range(40)]
    produce(kafka_settings, t["input"], values, partition=0)
    predictions, letters = reader(t["output"]), reader(t["dlq"])
    worker = in_process(t, model_path=toy_model)
    try:
        wait_until(
            lambda: len(predictions.ids()) + len(letters.snapshot()) == 40,
            60,
            "every message answered",
        )
        wait_until(
            lambda: committed_offsets(kafka_settings, group_id) == {0: 40}, 30, "offsets committed"
        )
    finally:
        worker.stop()
    kinds = {d["source"]["offset"]: d["error_kind"] for d in letters.snapshot()}
    assert kinds == {
        3: "decode",
        9: "validation",
        10: "validation",
        17: "decode",
        25: "validation",
        31: "decode",
    }
    assert predictions.ids() == Counter(f"art-{i}" for i in range(40) if i not in bad)
    big = next(d for d in letters.snapshot() if d["source"]["offset"] == 10)
    assert "over the limit" in big["error_message"]
    assert "payload cut" in big["error_message"]


def test_three_workers_split_six_partitions_and_together_predict_everything(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(6)
    env = env_for(service_env, t, group_id, model_path=str(toy_model), worker_id="slot")
    tagstream = [str(Path(sys.executable).parent / "tagstream")]
    supervisor = processes(env, "supervisor", [*tagstream, "worker", "run", "--processes", "3"])

    def split() -> dict[str, list[int]]:
        assert supervisor.process.poll() is None, supervisor.log_path.read_text()[-3000:]
        latest: dict[str, list[int]] = {}
        for line in supervisor.events("partitions assigned"):
            latest[line["worker_id"]] = line["partitions"]
        return latest

    wait_until(
        lambda: sorted(len(p) for p in split().values()) == [2, 2, 2],
        90,
        "three workers with two partitions each",
    )
    produce(kafka_settings, t["input"], articles(1200))
    predictions = reader(t["output"])
    wait_until(lambda: len(predictions.ids()) == 1200, 120, "1200 predictions")
    owners = {w: set(p) for w, p in split().items()}
    assert sorted(owners) == ["slot-0", "slot-1", "slot-2"]
    assert set().union(*owners.values()) == set(range(6))
    for p in predictions.snapshot():
        assert p["source"]["partition"] in owners[p["worker_id"]]
    assert predictions.ids() == expected_ids(1200)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert len(supervisor.events("worker stopped")) == 3


@pytest.mark.parametrize(
    ("guarantee", "inference_process", "backend"),
    [
        ("at_least_once", False, "kafka-python"),
        ("exactly_once", False, "kafka-python"),
        ("exactly_once", True, "kafka-python"),
        ("exactly_once", False, "confluent-kafka"),
    ],
    ids=[
        "at_least_once",
        "exactly_once",
        "exactly_once-inference_process",
        "exactly_once-confluent_kafka",
    ],
)
def test_a_worker_killed_mid_stream_loses_nothing(
    guarantee: str,
    inference_process: bool,
    backend: str,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    """SIGKILL after some predictions, restart: nothing missing; exactly-once (read with
    read_committed) also nothing twice. Static membership lets the restart take over at once.
    With the inference process, the killed worker's child goes with it."""
    t = topics(2)
    env = env_for(
        service_env,
        t,
        group_id,
        model_path=str(toy_model),
        worker_id="victim",
        group_instance_id="victim",
        processing_guarantee=guarantee,
        max_batch_size="16",
        commit_interval_ms="100",
        inference_process=str(inference_process).lower(),
    ) | {"TAGSTREAM_KAFKA_PRODUCER_BACKEND": backend}
    total = 3000
    produce(kafka_settings, t["input"], articles(total))
    predictions = reader(t["output"])
    first = processes(env, "first")
    wait_until(lambda: len(predictions.ids()) >= 400, 90, "400 predictions before the kill")
    children = child_pids(first.process.pid)
    assert len(children) == (1 if inference_process else 0), children
    first.kill()
    for child in children:
        wait_until(
            lambda child=child: not alive(child), 30, f"the killed worker's child {child} gone"
        )
    killed_at = len(predictions.snapshot())
    second = processes(env, "second")
    wait_until(
        lambda: len(predictions.ids()) == total,
        120,
        "every article predicted",
        lambda: explain_missing(kafka_settings, t, group_id, predictions, expected_ids(total)),
    )
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    counts = predictions.ids()
    assert set(counts) == set(expected_ids(total))
    duplicates = sum(counts.values()) - total
    print(f"{guarantee}: killed after {killed_at} predictions; {duplicates} duplicates")
    if guarantee == "exactly_once":
        assert duplicates == 0


@pytest.mark.parametrize("backend", ["kafka-python", "confluent-kafka"])
def test_exactly_once_holds_across_a_rebalance_when_a_second_worker_joins(
    backend: str,
    kafka_settings: KafkaSettings,
    topics: Any,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    in_process: Callable[..., InProcess],
) -> None:
    """Articles keep arriving while a second worker joins: revocation waits for the open
    transaction, the joiner starts from committed offsets, nothing is read twice."""
    t = topics(4)
    total, held_back = 2400, 600
    stream = articles(total)
    feed = Feeding(kafka_settings, t["input"], stream[:-held_back], 400.0)
    predictions = reader(t["output"])
    eos = {
        "processing_guarantee": "exactly_once",
        "model_path": toy_model,
        "max_batch_size": 16,
        "kafka": kafka_settings.model_copy(update={"producer_backend": backend}),
    }
    first = in_process(t, worker_id="first", **eos)
    wait_until(lambda: len(predictions.ids()) >= 300, 60, "300 predictions by the first worker")
    second = in_process(t, worker_id="second", **eos)
    # The last articles wait until the joiner holds partitions, so the rebalance always
    # lands while the stream runs, however slow the machine is.
    wait_until(
        lambda: second.metric("rebalance_events_total", event="assigned") >= 1,
        120,
        "the second worker's assignment",
    )
    feed.join()
    produce_steadily(kafka_settings, t["input"], stream[-held_back:], 400.0)
    wait_until(lambda: len(predictions.ids()) == total, 120, "every article predicted")
    first.stop()
    second.stop()
    counts = predictions.ids()
    assert counts == expected_ids(total)  # each exactly once
    assert {r["worker_id"] for r in predictions.snapshot()} == {"first", "second"}
    assert first.metric("rebalance_events_total", event="revoked") >= 4


@pytest.mark.parametrize(
    "inference_process", [False, True], ids=["in_process", "inference_process"]
)
def test_a_model_promoted_mid_stream_takes_over_and_a_broken_one_is_refused(
    inference_process: bool,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Any,
    reader: Callable[..., TopicReader],
    in_process: Callable[..., InProcess],
) -> None:
    t = topics(2)
    registry = Registry.from_settings(redis_settings, RegistrySettings())
    artifact = toy_artifact(LABELS)
    first = registry.publish(artifact.to_bytes(), artifact.manifest)
    registry.promote(first)
    produce(kafka_settings, t["input"], articles(600))
    predictions = reader(t["output"])
    worker = in_process(t, inference_process=inference_process)
    try:
        wait_until(lambda: len(predictions.ids()) >= 200, 60, "predictions by the first model")
        broken = registry.publish(b"not a safetensors file", artifact.manifest)
        registry.promote(broken)
        wait_until(lambda: worker.metric("model_refusals_total") == 1, 30, "refusal counted")
        assert worker.worker.slot.version == first
        second_artifact = toy_artifact(LABELS, seed=7)
        second = registry.publish(second_artifact.to_bytes(), second_artifact.manifest)
        registry.promote(second)
        wait_until(lambda: worker.worker.slot.version == second, 30, "second model serving")
        produce(kafka_settings, t["input"], articles(600, start=600))
        wait_until(lambda: len(predictions.ids()) == 1200, 60, "1200 predictions")
    finally:
        worker.stop()
        registry.close()
    records = predictions.snapshot()
    assert predictions.ids() == expected_ids(1200)
    assert {r["model_version"] for r in records} == {first, second}
    for partition in (0, 1):
        ordered = sorted(
            (r for r in records if r["source"]["partition"] == partition),
            key=lambda r: r["source"]["offset"],
        )
        versions = [r["model_version"] for r in ordered]
        assert versions == sorted(versions), "one switch per partition, in offset order"


def test_sigterm_drains_commits_and_ends_with_a_summary(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(2)
    env = env_for(
        service_env,
        t,
        group_id,
        model_path=str(toy_model),
        max_batch_size="1",
        max_poll_records="50",
        intake_chunks="2",
        commit_interval_ms="60000",
        commit_every_messages="1000000",
        device="cpu",  # the runtime asserted below is the CPU's, GPU or not
    )
    produce(kafka_settings, t["input"], articles(3000))
    predictions = reader(t["output"])
    worker = processes(env, "worker")
    wait_until(lambda: len(predictions.ids()) >= 300, 90, "300 predictions")
    # On the CPU the default runtime is ONNX Runtime, and torch is never loaded.
    libraries = mapped_libraries(worker.process.pid)
    assert any("onnxruntime" in name for name in libraries)
    assert not any("libtorch" in name for name in libraries)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    summary = worker.lines()[-1]
    assert summary["event"] == "worker stopped"
    committed = committed_offsets(kafka_settings, group_id)
    assert sum(committed.values()) > 0  # only the final commit could have written these
    published = {(r["source"]["partition"], r["source"]["offset"]) for r in predictions.snapshot()}
    for partition, offset in committed.items():
        assert all((partition, o) in published for o in range(offset))
    wait_until(
        lambda: len(predictions.snapshot()) == summary["predictions"],
        10,
        "every prediction counted in the summary is on the topic",
    )
    assert summary["predictions"] < 3000, "stopped mid-stream, not after the end"
    assert summary["consumed"] >= summary["predictions"] > 0


def test_output_through_the_confluent_backend_survives_a_kill_and_dead_letters_bad_input(
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Any,
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    """``TAGSTREAM_KAFKA_PRODUCER_BACKEND=confluent-kafka``, at-least-once: bad messages go to
    the dead-letter topic, a SIGKILL and a restart lose nothing, SIGTERM drains and exits 0.
    The model runs on the torch runtime here (``TAGSTREAM_WORKER_RUNTIME=torch``), so a real
    worker process serves on each runtime somewhere in this file."""
    t = topics(2)
    env = env_for(
        service_env,
        t,
        group_id,
        model_path=str(toy_model),
        worker_id="rd",
        group_instance_id="rd",
        max_batch_size="16",
        commit_interval_ms="100",
    ) | {"TAGSTREAM_KAFKA_PRODUCER_BACKEND": "confluent-kafka", "TAGSTREAM_WORKER_RUNTIME": "torch"}
    total = 3000
    bad = {7: (b"k7", b"\xff\xfe not utf-8"), 11: (b"k11", b'{"id": null, "body": "x"}')}
    good = articles(total)
    produce(kafka_settings, t["input"], [bad.get(i, good[i]) for i in range(total)])
    predictions, letters = reader(t["output"]), reader(t["dlq"])
    first = processes(env, "first")
    wait_until(lambda: len(predictions.ids()) >= 400, 90, "400 predictions before the kill")
    # librdkafka names its threads rdk:*; kafka-python's producer has none.
    assert any(name.startswith("rdk:") for name in thread_names(first.process.pid))
    assert any("libtorch" in name for name in mapped_libraries(first.process.pid))
    first.kill()
    second = processes(env, "second")
    wait_until(lambda: len(predictions.ids()) == total - len(bad), 120, "every article predicted")
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert set(predictions.ids()) == {f"art-{i}" for i in range(total) if i not in bad}
    kinds = {(d["source"]["offset"], d["source"]["partition"]) for d in letters.snapshot()}
    assert len(kinds) == len(bad)
    assert {d["error_kind"] for d in letters.snapshot()} == {"decode", "validation"}


def mapped_libraries(pid: int) -> set[str]:
    """The file names of the shared objects a process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]).name for line in maps if ".so" in line}


def thread_names(pid: int) -> list[str]:
    return [(task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()]
