"""A failed cycle is retried after doubling waits, not as fast as the service polls.

While Redis is away every cycle fails at once on its lock; the reliability suite's Redis
outage saw about two attempts (and two tracebacks) a second before this backoff.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from common.settings import KafkaSettings, RedisSettings
from model.settings import RegistrySettings
from schemas import LabelledArticle, SourceRef
from trainer import service as service_module
from trainer.service import TrainerService
from trainer.service_metrics import CycleResult
from trainer.settings import TrainerSettings
from trainer.store import StoredRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(service_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def new_service(tmp_path: Path) -> TrainerService:
    settings = TrainerSettings(
        store_path=tmp_path / "store.db",
        retrain_min_examples=1,
        cycle_retry_initial_s=2.0,
        cycle_retry_max_s=5.0,
        metrics_port=0,
    )
    service = TrainerService(settings, KafkaSettings(), RedisSettings(), RegistrySettings())
    service.store.append(
        [
            StoredRecord(
                LabelledArticle(id="a", body="text", labels=["earn"]),
                SourceRef(topic="labelled", partition=0, offset=0),
            )
        ]
    )
    return service


def fail(service: TrainerService, monkeypatch: pytest.MonkeyPatch) -> None:
    def cycle() -> CycleResult:
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(service, "cycle", cycle)
    assert service._cycle_logged() is None


def test_failed_cycles_wait_doubling_up_to_the_maximum(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = new_service(tmp_path)
    assert service.due()
    waits = []
    for _ in range(4):
        fail(service, monkeypatch)
        failed_at = clock.now
        while not service.due():
            clock.now += 0.5
        waits.append(clock.now - failed_at)
    service.store.close()
    assert waits == [2.0, 4.0, 5.0, 5.0]


def test_a_cycle_that_ends_resets_the_wait(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = new_service(tmp_path)
    fail(service, monkeypatch)
    fail(service, monkeypatch)  # the next wait would be 4 s
    result = CycleResult(False, "worse", None, 0.1, 0.2, 1, 1, 0.0)
    monkeypatch.setattr(service, "cycle", lambda: result)
    assert service._cycle_logged() is result
    fail(service, monkeypatch)
    clock.now += 2.0
    assert service.due()
    service.store.close()
