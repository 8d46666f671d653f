"""The loop with in-memory fakes for Kafka (tests/worker/fakes.py) and a fake model.

These check the loop's own behaviour: ordering of commits after acknowledgements,
dead letters, rewinds, backpressure, revocation, draining and hot swap. The same behaviours
against the real Kafka are in test_worker_kafka.py.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from model.errors import ArtifactError, ModelError
from tests.worker.fakes import POISON, FakeModel, FakeSink, FakeSource, LateSink, article
from worker import models
from worker.inference import Scorer
from worker.metrics import Metrics
from worker.offsets import TopicPartition
from worker.pipeline import Pipeline
from worker.refusals import RefusedResultError
from worker.settings import WorkerSettings
from worker.swap import ModelSlot, RetryPolicy, Swapper

TOPIC = "articles"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "metrics_port": None,
        "max_batch_size": 16,
        "max_wait_ms": 5,
        "commit_interval_ms": 50,
        "poll_timeout_ms": 5,
        "revoke_timeout_s": 5.0,
        "drain_timeout_s": 10.0,
    }
    return WorkerSettings(**(values | overrides))


class Harness:
    def __init__(
        self, source: FakeSource, sink: FakeSink, model: FakeModel, **overrides: Any
    ) -> None:
        self.source, self.sink, self.metrics = source, sink, Metrics()
        self.slot = ModelSlot(self.metrics)
        self.slot.install(model)
        self.pipeline = Pipeline(
            settings(**overrides),
            source,
            sink,
            slot=self.slot,
            metrics=self.metrics,
            scorer=Scorer(8),
            worker_id="w-test",
        )
        self.error: BaseException | None = None

    def predictions(self) -> list[dict[str, Any]]:
        return self.sink.on("articles.predictions")

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.sink.on("articles.dlq")

    def results(self) -> int:
        return len(self.predictions()) + len(self.dead_letters())

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(f"tagstream_worker_{name}", labels) or 0.0

    @contextmanager
    def running(self) -> Iterator[Harness]:
        def run() -> None:
            try:
                self.pipeline.run()
            except BaseException as exc:
                self.error = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.pipeline.stop()
            thread.join(timeout=30)
            assert not thread.is_alive(), "the pipeline did not stop"
        if self.error is not None:
            raise self.error


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout_s, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.01):
                raise AssertionError(f"not true within {timeout_s} s")
    finally:
        deadline.cancel()


def ids(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["article_id"] for r in records)


def test_every_article_is_predicted_once_and_offsets_are_committed_to_the_end() -> None:
    source = FakeSource(
        TOPIC, {0: [article(i) for i in range(300)], 1: [article(i) for i in range(300, 650)]}
    )
    harness = Harness(source, FakeSink(), FakeModel())
    with harness.running():
        wait_until(lambda: harness.results() == 650)
        wait_until(lambda: source.committed == {P0: 300, P1: 350})
    assert ids(harness.predictions()) == Counter(f"a{i}" for i in range(650))
    first = harness.predictions()[0]
    assert first["model_version"] == 1
    assert first["worker_id"] == "w-test"
    assert first["labels"] == [{"name": "earn", "score": pytest.approx(0.9)}]
    assert harness.value("predictions_published_total") == 650
    assert harness.value("batch_articles_count") >= 650 / 16


def test_bad_messages_go_to_the_dead_letter_topic_while_their_neighbours_are_predicted() -> None:
    values: list[bytes | None] = [article(i) for i in range(10)]
    values[2] = b"{broken"
    values[5] = b'{"id": "", "body": "x"}'
    values[7] = None
    values[8] = article(8, f"markets {POISON} fell")
    source = FakeSource(TOPIC, {0: values})
    harness = Harness(source, FakeSink(), FakeModel())
    with harness.running():
        wait_until(lambda: harness.results() == 10)
        wait_until(lambda: source.committed == {P0: 10})
    letters = {d["source"]["offset"]: d for d in harness.dead_letters()}
    assert {o: d["error_kind"] for o, d in letters.items()} == {
        2: "decode",
        5: "validation",
        7: "decode",
        8: "inference",
    }
    assert "cannot digest" in letters[8]["error_message"]
    assert letters[2]["source"] == {"topic": TOPIC, "partition": 0, "offset": 2}
    assert ids(harness.predictions()) == Counter(f"a{i}" for i in (0, 1, 3, 4, 6, 9))
    assert harness.value("dead_letters_total", kind="inference") == 1


def test_a_refused_result_rewinds_its_partition_and_is_published_before_it_is_committed() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(40)]})
    sink = FakeSink(refuse={b"a17"})
    harness = Harness(source, sink, FakeModel())
    with harness.running():
        wait_until(lambda: "a17" in ids(harness.predictions()))
        wait_until(lambda: source.committed == {P0: 40})
    assert sink.refused == [b"a17"]
    assert set(ids(harness.predictions())) == {f"a{i}" for i in range(40)}
    assert harness.value("partition_rewinds_total") == 1


def test_a_join_that_never_completes_is_abandoned_and_retried() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(20)]}, lose_first_join=True)
    harness = Harness(
        source,
        FakeSink(),
        FakeModel(),
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
        revoke_timeout_s=0.5,
        join_timeout_s=1.2,
    )
    with harness.running():
        wait_until(lambda: harness.results() == 20)
    assert source.resubscribed == 1
    assert harness.value("forced_rejoins_total") == 1


class Gate(FakeModel):
    """A model whose scoring waits until the test opens the gate."""

    def __init__(self, version: int = 1) -> None:
        super().__init__(version)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(30)
        return super().scores(token_ids)


def test_partitions_are_paused_while_the_intake_is_full_and_resumed_after() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(2000)]})
    model = Gate()
    harness = Harness(source, FakeSink(), model, intake_chunks=2, batch_queue=1)
    with harness.running():
        wait_until(lambda: source.paused_set == {P0})
        held = source.positions[P0]
        assert held < 2000  # polling stopped short of the end while paused
        model.gate.set()
        wait_until(lambda: harness.results() == 2000)
        wait_until(lambda: source.paused_set == set())
    assert len(ids(harness.predictions())) == 2000


def test_revoked_partitions_are_finished_and_committed_before_they_are_given_up() -> None:
    """Work of a revoked partition still in flight is published and committed before the
    partition goes; when it comes back it resumes from that commit: nothing lost, nothing
    predicted twice."""
    source = FakeSource(
        TOPIC, {0: [article(i) for i in range(100)], 1: [article(i) for i in range(100, 200)]}
    )
    model = Gate()
    harness = Harness(source, FakeSink(), model)
    with harness.running():
        assert model.entered.wait(10)  # batches of both partitions in flight, none published
        source.rebalance(revoke={P0, P1}, assign={P1})
        threading.Timer(0.3, model.gate.set).start()  # within revoke_timeout_s
        wait_until(lambda: harness.pipeline.tracker.partitions() == {P1})
        given_up_at = source.committed.get(P0, 0)
        published = {
            p["source"]["offset"] for p in harness.predictions() if p["source"]["partition"] == 0
        }
        assert given_up_at > 0
        assert published == set(range(given_up_at)), "committed exactly what was published"
        source.append(0, [article(i) for i in range(900, 910)])
        source.append(1, [article(i) for i in range(200, 210)])
        source.rebalance(revoke={P1}, assign={P0, P1})  # P0 comes back from its commit
        wait_until(lambda: source.committed == {P0: 110, P1: 110})
    expected = [*range(200), *range(900, 910), *range(200, 210)]
    assert ids(harness.predictions()) == Counter(f"a{i}" for i in expected)


def test_work_still_in_flight_at_the_revocation_deadline_is_read_again_not_skipped() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(50)]})
    model = Gate()
    harness = Harness(source, FakeSink(), model, revoke_timeout_s=0.2)
    with harness.running():
        assert model.entered.wait(10)
        source.rebalance(revoke={P0}, assign={P0})  # kafka-python keeps the position
        wait_until(lambda: harness.value("rebalance_events_total", event="assigned") == 2)
        model.gate.set()
        wait_until(lambda: set(ids(harness.predictions())) == {f"a{i}" for i in range(50)})
        wait_until(lambda: source.committed == {P0: 50})
    assert harness.value("messages_discarded_total") > 0


def test_stop_drains_in_flight_batches_and_commits_only_what_was_published() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(500)]})
    model = Gate()
    harness = Harness(source, FakeSink(), model)
    with harness.running():
        assert model.entered.wait(10)
        harness.pipeline.stop()
        model.gate.set()
    committed = source.committed[P0]
    published = {r["source"]["offset"] for r in harness.predictions()}
    assert committed > 0
    assert set(range(committed)) <= published
    assert harness.pipeline.tracker.partitions() == set()


def test_a_flush_that_runs_out_of_time_ends_the_drain_with_a_commit_of_what_was_acked() -> None:
    """The broker stops answering after 60 results: the drain's flush runs out of time, the
    drain goes on, and its final commit (the only one here) stops at the first result
    without an answer."""
    source = FakeSource(TOPIC, {0: [article(i) for i in range(100)]})
    sink = LateSink(answered=60)
    harness = Harness(
        source,
        sink,
        FakeModel(),
        drain_timeout_s=0.5,
        commit_interval_ms=600_000,
        commit_every_messages=10_000,
    )
    try:
        with harness.running():
            wait_until(lambda: sink.sends == 100 and len(sink.sent) == 60)
            assert source.committed == {}
            harness.pipeline.stop()
    finally:
        sink.release()
    assert source.committed == {P0: 60}
    assert harness.pipeline.tracker.partitions() == set()


def test_a_new_model_takes_over_between_batches_with_nothing_lost_or_repeated() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(200)]})
    harness = Harness(source, FakeSink(), FakeModel(version=1))
    swapper = Swapper(harness.slot, FakeModel, harness.metrics)
    with harness.running():
        wait_until(lambda: harness.results() >= 50)
        assert swapper.swap_to(2)
        source.append(0, [article(i) for i in range(200, 400)])
        wait_until(lambda: harness.results() == 400)
    predictions = sorted(harness.predictions(), key=lambda p: p["source"]["offset"])
    versions = [p["model_version"] for p in predictions]
    assert ids(predictions) == Counter(f"a{i}" for i in range(400))
    assert versions == sorted(versions)  # one switch, in offset order
    assert versions[0] == 1 and versions[-1] == 2
    assert harness.value("model_swaps_total") == 1


class Broken(FakeModel):
    def warm_up(self) -> None:
        raise ArtifactError("weights do not fit the network")


def test_a_broken_new_version_is_refused_and_the_old_one_keeps_serving() -> None:
    metrics = Metrics()
    slot = ModelSlot(metrics)
    slot.install(FakeModel(version=3))
    swapper = Swapper(slot, Broken, metrics)
    assert not swapper.swap_to(4)
    assert slot.version == 3
    assert swapper.refused() == {4}
    assert metrics.registry.get_sample_value("tagstream_worker_model_refusals_total") == 1
    assert metrics.registry.get_sample_value("tagstream_worker_model_version") == 3


class ShortOfMemory(FakeModel):
    def warm_up(self) -> None:
        raise MemoryError("cannot allocate the LSTM's weights")


def test_a_version_failing_for_a_transient_reason_is_refused_only_after_the_last_attempt() -> None:
    metrics = Metrics()
    slot = ModelSlot(metrics)
    slot.install(FakeModel(version=3))
    swapper = Swapper(slot, ShortOfMemory, metrics, retry=RetryPolicy(3, 0.01, 0.02))
    swapper.start()
    try:
        swapper.want(4)
        wait_until(lambda: swapper.refused() == {4}, timeout_s=5)
        assert metrics.registry.get_sample_value("tagstream_worker_model_load_retries_total") == 2
        assert metrics.registry.get_sample_value("tagstream_worker_model_refusals_total") == 1
        assert slot.version == 3
        swapper.want(4)  # promoted again: tried again
        wait_until(
            lambda: metrics.registry.get_sample_value("tagstream_worker_model_refusals_total") == 2,
            timeout_s=5,
        )
    finally:
        swapper.stop()


def test_the_swapper_thread_loads_the_version_it_is_told_about() -> None:
    metrics = Metrics()
    slot = ModelSlot(metrics)
    slot.install(FakeModel(version=1))
    swapper = Swapper(slot, FakeModel, metrics)
    swapper.start()
    try:
        swapper.want(2)
        wait_until(lambda: slot.version == 2, timeout_s=5)
    finally:
        swapper.stop()


class Flaky:
    """A model source that has nothing to serve for the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def current(self) -> FakeModel:
        if self.failures:
            self.failures -= 1
            raise ModelError("alias 'production' is not set")
        return FakeModel(version=5)


def test_a_worker_waits_for_a_model_and_starts_with_the_first_that_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models, "RETRY_S", 0.01)
    model = models.first_model(Flaky(failures=2), threading.Event())  # type: ignore[arg-type]
    assert model is not None and model.version == 5


def test_waiting_for_a_model_ends_when_the_worker_is_stopped() -> None:
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    assert models.first_model(Flaky(failures=10**6), stop) is None  # type: ignore[arg-type]


class Outage(FakeModel):
    """A model whose every forward pass raises while ``broken`` is set (a sticky device
    error): its warm-up input fails too."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = threading.Event()
        self.failed_calls = 0

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        if self.broken.is_set():
            self.failed_calls += 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().scores(token_ids)


def test_a_model_failing_on_everything_is_not_dead_lettered_and_recovers_on_its_own() -> None:
    source = FakeSource(TOPIC, {0: [article(i) for i in range(50)]})
    model = Outage()
    harness = Harness(
        source,
        FakeSink(),
        model,
        breaker_window=4,
        breaker_backoff_initial_s=0.05,
        breaker_backoff_max_s=0.2,
    )
    with harness.running():
        wait_until(lambda: harness.results() == 50)
        wait_until(lambda: source.committed == {P0: 50})
        model.broken.set()
        source.append(0, [article(i) for i in range(50, 150)])
        wait_until(lambda: harness.value("inference_breaker_open") == 1)
        wait_until(lambda: model.failed_calls > 40)  # several trials, each failing
        assert harness.pipeline.breaker.is_open()
        assert harness.dead_letters() == []
        assert harness.results() == 50
        assert source.committed == {P0: 50}
        model.broken.clear()
        wait_until(lambda: source.committed == {P0: 150})
        assert not harness.pipeline.breaker.is_open()
    assert harness.dead_letters() == []
    assert set(ids(harness.predictions())) == {f"a{i}" for i in range(150)}
    assert harness.value("inference_breaker_trips_total") == 1
    assert harness.value("inference_systemic_failures_total") >= 2
    assert harness.value("inference_breaker_open") == 0


def test_poisoned_articles_alone_in_their_batches_are_dead_lettered_the_breaker_stays_shut() -> (
    None
):
    values = [article(i) for i in range(20)]
    poisoned = {3, 4, 5, 6, 7, 12}
    for i in poisoned:
        values[i] = article(i, f"markets {POISON} fell")
    source = FakeSource(TOPIC, {0: values})
    harness = Harness(source, FakeSink(), FakeModel(), max_batch_size=1, breaker_window=2)
    with harness.running():
        wait_until(lambda: harness.results() == 20)
        wait_until(lambda: source.committed == {P0: 20})
    letters = {d["source"]["offset"]: d["error_kind"] for d in harness.dead_letters()}
    assert letters == dict.fromkeys(poisoned, "inference")
    assert harness.value("inference_systemic_failures_total") == 0
    assert harness.value("inference_breaker_trips_total") == 0


def test_a_prediction_the_broker_always_refuses_becomes_a_dead_letter_after_bounded_retries() -> (
    None
):
    values = [article(i) for i in range(30)]
    values[12] = json.dumps({"id": "long-" + "x" * 250, "body": "profit rose"}).encode()
    source = FakeSource(TOPIC, {0: values})
    sink = FakeSink(max_bytes={"articles.predictions": 450})  # the others' are about 330
    harness = Harness(source, sink, FakeModel(), refused_retries=2)
    with harness.running():
        wait_until(lambda: source.committed == {P0: 30})
    assert sink.too_large == [("articles.predictions", sink.too_large[0][1])] * 3
    (letter,) = harness.dead_letters()
    assert letter["source"]["offset"] == 12
    assert letter["error_kind"] == "internal"
    assert "refused by the broker: 3 times" in letter["error_message"]
    assert "MessageSizeTooLargeError" in letter["error_message"]
    assert base64.b64decode(letter["payload"]) == values[12]
    assert len(ids(harness.predictions())) == 29
    assert harness.value("refused_results_replaced_total", replacement="dead letter") == 1


def test_a_dead_letter_too_large_for_its_topic_is_sent_bare_after_bounded_retries() -> None:
    values = [article(i) for i in range(10)]
    values[4] = b"\xff" + b"not json " * 300
    source = FakeSource(TOPIC, {0: values})
    sink = FakeSink(max_bytes={"articles.dlq": 1500})
    harness = Harness(source, sink, FakeModel(), refused_retries=1)
    with harness.running():
        wait_until(lambda: source.committed == {P0: 10})
    assert [topic for topic, _ in sink.too_large] == ["articles.dlq"] * 2
    (letter,) = harness.dead_letters()
    assert letter["source"]["offset"] == 4
    assert letter["payload"] == "" and letter["key"] is None
    assert "refused by the broker: 2 times" in letter["error_message"]
    assert harness.value("refused_results_replaced_total", replacement="bare") == 1
    assert len(ids(harness.predictions())) == 9


def test_a_worker_whose_every_dead_letter_is_refused_stops_instead_of_rewinding_for_ever() -> None:
    values = [article(i) for i in range(10)]
    values[4] = b"{broken"
    source = FakeSource(TOPIC, {0: values})
    sink = FakeSink(max_bytes={"articles.dlq": 10})
    harness = Harness(source, sink, FakeModel(), refused_retries=1)
    refused = pytest.raises(RefusedResultError, match=r"articles\[0\]@4 was refused 3 times")
    with refused, harness.running():
        wait_until(lambda: harness.error is not None)
    assert len(sink.too_large) == 3, "as it is, once more, then bare"
    assert source.committed.get(P0, 0) <= 4


def test_a_stop_while_the_model_fails_ends_without_waiting_out_the_backoff() -> None:
    """The drain deadline (60 s) and the backoff (10 min) are both longer than the harness
    waits for the pipeline to stop (30 s): only cutting the backoff short gets there."""
    source = FakeSource(TOPIC, {0: [article(i) for i in range(40)]})
    model = Outage()
    model.broken.set()
    harness = Harness(
        source,
        FakeSink(),
        model,
        breaker_window=1,
        breaker_backoff_initial_s=600,
        breaker_backoff_max_s=600,
        drain_timeout_s=60,
    )
    with harness.running():
        wait_until(lambda: harness.value("inference_breaker_open") == 1)
    assert harness.dead_letters() == harness.predictions() == []
    assert source.committed.get(P0, 0) == 0
