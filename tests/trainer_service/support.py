"""Helpers for the trainer-service tests: a service over this test's Redis, toy artifacts
that carry the holdout scores the gate is to measure for them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from common.settings import KafkaSettings, RedisSettings
from model.artifact import Artifact
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import toy_artifact
from schemas import LabelledArticle
from trainer import gate as gate_module
from trainer.datasets import Datasets
from trainer.lock import TrainingLock
from trainer.service import TrainerService
from trainer.settings import TrainerSettings

LABELS = ["earn", "acq", "crude"]


def scored_artifact(micro: float, macro: float, seed: int = 0) -> Artifact:
    """A toy artifact whose manifest names the holdout (micro, macro) it is to score."""
    artifact = toy_artifact(LABELS, seed=seed)
    metrics = {"planted_micro_f1": micro, "planted_macro_f1": macro}
    manifest = artifact.manifest.model_copy(update={"metrics": metrics})
    return dataclasses.replace(artifact, manifest=manifest)


def planted_scores(monkeypatch: pytest.MonkeyPatch) -> list[Artifact]:
    """Make holdout scoring return each artifact's planted scores; returns what was scored.

    The gate's arithmetic is under test, not the models: toy artifacts all score about 0."""
    scored: list[Artifact] = []

    def scores(
        artifact: Artifact, articles: list[LabelledArticle], labels: list[str]
    ) -> tuple[float, float]:
        scored.append(artifact)
        metrics = artifact.manifest.metrics
        return metrics["planted_micro_f1"], metrics["planted_macro_f1"]

    monkeypatch.setattr(gate_module, "holdout_scores", scores)
    return scored


def gate_service(
    tmp_path: Path, redis_settings: RedisSettings, **overrides: object
) -> TrainerService:
    values = {"store_path": tmp_path / "store.db", "metrics_port": 0} | overrides
    settings = TrainerSettings(**values)  # type: ignore[arg-type]
    datasets = Datasets(seed=[], validation=[], holdout=[], labels=LABELS)
    registry = RegistrySettings(cache_dir=tmp_path / "cache")
    return TrainerService(settings, KafkaSettings(), redis_settings, registry, datasets)


def open_registry(tmp_path: Path, redis_settings: RedisSettings) -> Registry:
    return Registry.from_settings(redis_settings, RegistrySettings(cache_dir=tmp_path / "c"))


def publish(registry: Registry, artifact: Artifact) -> int:
    return registry.publish(artifact.to_bytes(), artifact.manifest)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def stall(lock: TrainingLock, client: redis.Redis, key: str) -> None:
    """What a frozen process does: no more renewals, until its lock's TTL has run out."""
    lock._stop.set()
    assert lock._renewer is not None
    lock._renewer.join()
    wait_until(lambda: not client.exists(key), 10, "the stalled lock to expire")
