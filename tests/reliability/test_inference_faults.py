"""Scenario 5: a batch whose inference fails because of one article in it.

The fault is injected by wrapping the real classifier the worker loads (a test-only
wrapper, installed by replacing ``worker.app.open_models``; nothing in the worker's own code
path changes): a batch holding a poisoned article raises, ``RuntimeError`` for one marker
and ``torch.OutOfMemoryError`` for another, as a model that runs out of memory on one very
long article would. The worker must halve the batch until each offender stands alone, dead
letter the offenders and predict everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import worker.app
from common.settings import KafkaSettings, RedisSettings
from model.settings import RegistrySettings
from schemas import Article
from tests.reliability.support import record, tally
from tests.worker.harness import FAST, InProcess, articles
from tests.worker.kafka_tools import TopicReader, produce, wait_until
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
