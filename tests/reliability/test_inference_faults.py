"""Scenario 5: a batch whose inference fails because of one article in it, and a model that
fails on everything for a while.

The fault is injected by wrapping the real classifier the worker loads (a test-only
wrapper, installed by replacing ``worker.app.open_models``; nothing in the worker's own code
path changes): a batch holding a poisoned article raises, ``RuntimeError`` for one marker
and ``torch.OutOfMemoryError`` for another, as a model that runs out of memory on one very
long article would. The worker must halve the batch until each offender stands alone, dead
letter the offenders and predict everything else.

The second scenario makes every forward pass raise while an outage flag is up, as a sticky
CUDA error would: the worker must dead-letter nothing, commit nothing, fail ``/healthz``,
and, once the flag is down, predict every article (exactly once under exactly-once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kafka.errors import KafkaError

import worker.app
from common.settings import KafkaSettings, RedisSettings
from model.settings import RegistrySettings
from schemas import Article
from tests.reliability.support import record, tally
from tests.worker.harness import FAST, InProcess, articles, get
from tests.worker.kafka_tools import TopicReader, committed_offsets, produce, wait_until
from worker.inference import Model
from worker.models import Models
from worker.settings import WorkerSettings
from worker.swap import Swapper

pytestmark = pytest.mark.integration

FAULTS: dict[str, type[Exception]] = {
    "RUNTIMEFAULT": RuntimeError,
    "MEMORYFAULT": torch.OutOfMemoryError,
}


class PoisonedModel:
    """The real model, except that scoring a batch that holds a poisoned article raises."""

    def __init__(self, inner: Model, calls: list[int]) -> None:
        self._inner = inner
        self._poison: dict[tuple[int, ...], type[Exception]] = {}
        self.calls = calls

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self._inner.encode(texts)
        for text, ids in zip(texts, encoded, strict=True):
            for marker, error in FAULTS.items():
                if marker in text:
                    self._poison[tuple(ids)] = error
        return encoded

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        if self._poison:  # not the warm-up: it scores before anything is encoded
            self.calls.append(len(token_ids))
        for ids in token_ids:
            error = self._poison.get(tuple(ids))
            if error is not None:
                raise error(f"injected {error.__name__} for one article of {len(token_ids)}")
        return self._inner.scores(token_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PoisonedModels:
    """The worker's model source, handing out poisoned models."""

    def __init__(self, inner: Models, calls: list[int]) -> None:
        self._inner = inner
        self.calls = calls

    def current(self) -> Model:
        return PoisonedModel(self._inner.current(), self.calls)  # type: ignore[return-value]

    def version(self, version: int) -> Model:
        return PoisonedModel(self._inner.version(version), self.calls)  # type: ignore[return-value]

    def watch(self, swapper: Swapper, serving: int) -> None:
        self._inner.watch(swapper, serving)

    def close(self) -> None:
        self._inner.close()


def test_a_batch_failing_in_inference_is_split_and_only_the_offenders_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    calls: list[int] = []
    real_open_models = worker.app.open_models
    monkeypatch.setattr(
        worker.app, "open_models", lambda *a: PoisonedModels(real_open_models(*a), calls)
    )
    t = topics(1)
    values = articles(64)
    poisoned = {10: "RUNTIMEFAULT", 41: "MEMORYFAULT"}
    for index, marker in poisoned.items():
        key, value = values[index]
        article = Article.model_validate_json(value)
        values[index] = (
            key,
            article.model_copy(update={"title": marker}).model_dump_json().encode(),
        )
    produce(kafka_settings, t["input"], values, partition=0)
    predictions, letters = reader(t["output"]), reader(t["dlq"])
    settings = WorkerSettings(
        **(FAST | {"max_wait_ms": "1000"}),
        input_topic=t["input"],
        output_topic=t["output"],
        dlq_topic=t["dlq"],
        group_id=group_id,
        worker_id="poisoned",
        model_path=toy_model,
        max_batch_size=64,
    )
    running = InProcess(
        settings, kafka_settings, redis_settings, RegistrySettings(cache_dir=tmp_path / "cache")
    )
    try:
        wait_until(
            lambda: len(predictions.snapshot()) + len(letters.snapshot()) >= 64, 60, "64 answers"
        )
    finally:
        running.stop()
    dead = {d["source"]["offset"]: d for d in letters.snapshot()}
    assert sorted(dead) == sorted(poisoned)
    assert dead[10]["error_kind"] == dead[41]["error_kind"] == "inference"
    assert dead[10]["error_message"].startswith("RuntimeError: injected")
    assert dead[41]["error_message"].startswith("OutOfMemoryError: injected")
    assert sum(calls) > 64, "articles of the failing calls were scored again, in halves"
    assert calls.count(1) >= 2, "each offender was tried on its own"
    assert running.metric("dead_letters_total", kind="inference") == 2
    counted = tally(
        (k.decode() for i, (k, _) in enumerate(values) if i not in poisoned),
        predictions.ids(),
        len(dead),
    )
    record(
        "5-inference-fault",
        **(counted.figures() | {"produced": len(values)}),
        model_calls_for_the_batch=len(calls),
        call_sizes=calls,
    )
    assert counted.missing == counted.duplicated == 0


def _committed(kafka: KafkaSettings, group: str) -> dict[int, int] | None:
    """The group's committed offsets per partition; None while its coordinator is not ready
    (the first look-up of a new group can find none)."""
    try:
        return committed_offsets(kafka, group)
    except KafkaError:
        return None


class BrokenRuntime:
    """The real model, except that every forward pass raises while ``outage`` is set: the
    warm-up input fails as well, as on a device that hit a sticky error."""

    def __init__(self, inner: Model, outage: threading.Event, calls: list[int]) -> None:
        self._inner = inner
        self._outage = outage
        self.calls = calls

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        if self._outage.is_set():
            self.calls.append(len(token_ids))
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        return self._inner.scores(token_ids)

    def warm_up(self) -> None:
        for length in (1, 16, 128):
            self.scores([[1] * length] * 4)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class BrokenRuntimes(PoisonedModels):
    def __init__(self, inner: Models, outage: threading.Event, calls: list[int]) -> None:
        super().__init__(inner, calls)
        self._outage = outage

    def current(self) -> Model:
        return BrokenRuntime(self._inner.current(), self._outage, self.calls)  # type: ignore[return-value]

    def version(self, version: int) -> Model:
        model = self._inner.version(version)
        return BrokenRuntime(model, self._outage, self.calls)  # type: ignore[return-value]


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_model_failing_on_everything_dead_letters_and_commits_nothing_then_recovers(
    guarantee: str,
    monkeypatch: pytest.MonkeyPatch,
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    outage, calls = threading.Event(), list[int]()
    real_open_models = worker.app.open_models
    monkeypatch.setattr(
        worker.app, "open_models", lambda *a: BrokenRuntimes(real_open_models(*a), outage, calls)
    )
    t = topics(2)
    before, during = articles(100), articles(300, start=100)
    for partition in (0, 1):
        produce(kafka_settings, t["input"], before[partition::2], partition=partition)
    predictions, letters = reader(t["output"]), reader(t["dlq"])
    settings = WorkerSettings(
        **FAST,
        input_topic=t["input"],
        output_topic=t["output"],
        dlq_topic=t["dlq"],
        group_id=group_id,
        worker_id=f"outage-{guarantee}",
        model_path=toy_model,
        processing_guarantee=guarantee,
        max_batch_size=32,
        breaker_window=4,
        breaker_backoff_initial_s=0.2,
        breaker_backoff_max_s=1.0,
    )
    running = InProcess(
        settings, kafka_settings, redis_settings, RegistrySettings(cache_dir=tmp_path / "cache")
    )
    try:
        wait_until(lambda: _committed(kafka_settings, group_id) == {0: 50, 1: 50}, 60, "")
        port = running.worker.health_port
        assert get(port, "/healthz")[0] == 200
        outage.set()
        for partition in (0, 1):
            produce(kafka_settings, t["input"], during[partition::2], partition=partition)
        wait_until(lambda: get(port, "/healthz")[0] == 503, 60, "/healthz failing")
        _, body = get(port, "/healthz")
        assert "inference failing" in body and "illegal memory access" in body, body
        wait_until(lambda: running.metric("inference_systemic_failures_total") >= 6, 60, "trials")
        assert letters.snapshot() == []
        assert len(predictions.snapshot()) == 100
        assert _committed(kafka_settings, group_id) == {0: 50, 1: 50}
        assert get(port, "/healthz")[0] == 503
        outage_calls = len(calls)
        outage.clear()
        wait_until(lambda: _committed(kafka_settings, group_id) == {0: 200, 1: 200}, 60, "all")
        wait_until(lambda: len(predictions.snapshot()) >= 400, 60, "400 predictions")
        assert get(port, "/healthz")[0] == 200
        trips = running.metric("inference_breaker_trips_total")
        failures = running.metric("inference_systemic_failures_total")
    finally:
        running.stop()
    assert letters.snapshot() == []
    assert running.metric("dead_letters_total", kind="inference") == 0
    assert trips >= 1
    counted = tally((k.decode() for k, _ in before + during), predictions.ids())
    record(
        f"5-model-outage-{guarantee}",
        **(counted.figures() | {"produced": len(before) + len(during)}),
        breaker_trips=trips,
        batches_rewound=failures,
        failed_forward_passes=outage_calls,
    )
    assert counted.missing == 0
    if guarantee == "exactly_once":
        assert counted.duplicated == 0
