"""The promotion gate weighs micro- and macro-F1 on the holdout alike, against the best of the
alias's last versions (no slow decay), and promotes only over the version it measured."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from common.settings import RedisSettings
from tests.trainer_service.support import (
    gate_service,
    open_registry,
    planted_scores,
    publish,
    scored_artifact,
    stall,
)
from trainer import service as service_module
from trainer.errors import LockLostError
from trainer.gate import Baseline, best_scores, passes_gate
from trainer.lock import TrainingLock, training_lock


def test_a_candidate_better_on_micro_but_worse_on_macro_is_not_promoted() -> None:
    assert not passes_gate((0.90, 0.40), (0.88, 0.50), margin=0.005)


def test_a_candidate_within_the_margin_on_both_measures_is_promoted() -> None:
    assert passes_gate((0.876, 0.496), (0.88, 0.50), margin=0.005)
    assert not passes_gate((0.87, 0.50), (0.88, 0.50), margin=0.005)


def test_with_no_production_model_the_candidate_is_promoted() -> None:
    assert passes_gate((0.1, 0.0), None, margin=0.0)


def test_the_baseline_is_the_best_of_each_measure() -> None:
    assert best_scores([(0.80, 0.40), (0.78, 0.45), (0.79, 0.41)]) == (0.80, 0.45)
    assert best_scores([]) is None


@pytest.mark.integration
@pytest.mark.parametrize(
    ("gate_history", "expected"),
    [(3, [0.80, 0.796]), (1, [0.80, 0.796, 0.792, 0.788])],
    ids=["best-of-3-stops-the-slide", "current-only-slides"],
)
def test_candidates_a_little_worse_each_cycle_stop_once_below_the_best_of_the_last_versions(
    tmp_path: Path,
    redis_settings: RedisSettings,
    monkeypatch: pytest.MonkeyPatch,
    gate_history: int,
    expected: list[float],
) -> None:
    """Each candidate is 0.004 below the last (margin 0.005): comparing with the current version
    alone (``gate_history=1``, the old rule) promotes all four and slides 0.012; the best of
    the last three stops the slide after one step."""
    planted_scores(monkeypatch)
    service = gate_service(
        tmp_path, redis_settings, gate_history=gate_history, promotion_margin=0.005
    )
    registry = open_registry(tmp_path, redis_settings)
    promoted = []
    for cycle in range(4):
        score = 0.80 - 0.004 * cycle
        baseline = service.production_baseline(registry, service.datasets)
        if passes_gate((score, score), baseline.scores, service.settings.promotion_margin):
            version = publish(registry, scored_artifact(score, score, seed=cycle))
            registry.promote(version)
            promoted.append(round(score, 3))
    assert promoted == expected
    registry.close()


@pytest.mark.integration
def test_the_baseline_names_the_current_version_and_measures_each_artifact_once(
    tmp_path: Path, redis_settings: RedisSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    scored = planted_scores(monkeypatch)
    service = gate_service(tmp_path, redis_settings, gate_history=2)
    with open_registry(tmp_path, redis_settings) as registry:
        artifacts = [scored_artifact(0.7 + i / 100, 0.4, seed=i) for i in range(3)]
        versions = [publish(registry, artifact) for artifact in artifacts]
        for version in versions:
            registry.promote(version)
        baseline = service.production_baseline(registry, service.datasets)
        assert baseline == Baseline(versions[2], (0.72, 0.4), (versions[2], versions[1]))
        service.production_baseline(registry, service.datasets)
    assert len(scored) == 2


@pytest.mark.integration
def test_a_manual_rollback_during_the_cycle_is_not_overwritten(
    tmp_path: Path,
    redis_settings: RedisSettings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted_scores(monkeypatch)
    service = gate_service(tmp_path, redis_settings)
    with (
        open_registry(tmp_path, redis_settings) as registry,
        training_lock(redis_client, redis_settings.namespace, ttl_s=5) as lock,
    ):
        old, measured = (publish(registry, scored_artifact(0.8, 0.4, seed=i)) for i in range(2))
        registry.promote(old)
        registry.promote(measured)
        baseline = service.production_baseline(registry, service.datasets)
        registry.rollback()  # an operator, while the candidate trains
        candidate = scored_artifact(0.9, 0.5, seed=9)
        version, why_not = service.publish(registry, candidate, 0.9, lock.fence(), baseline)
        assert registry.aliases() == {"production": old}
        assert version in registry.versions()
        assert why_not is not None and "moved during the cycle" in why_not


@pytest.mark.integration
def test_a_trainer_whose_lock_was_taken_over_publishes_nothing(
    tmp_path: Path,
    redis_settings: RedisSettings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stalled past its TTL between the lock check and the publish: the registry refuses."""
    planted_scores(monkeypatch)
    service = gate_service(tmp_path, redis_settings)
    namespace = redis_settings.namespace
    stale = TrainingLock(redis_client, namespace, ttl_s=1.5)
    assert stale.acquire()
    with open_registry(tmp_path, redis_settings) as registry:
        baseline = service.production_baseline(registry, service.datasets)
        assert stale.still_held()  # the check before publishing passes; then it stalls
        stall(stale, redis_client, f"{namespace}:trainer:lock")
        with (  # another trainer took the lock meanwhile
            training_lock(redis_client, namespace, ttl_s=5),
            pytest.raises(LockLostError, match="fenced off"),
        ):
            service.publish(registry, scored_artifact(0.9, 0.5), 0.9, stale.fence(), baseline)
        assert registry.versions() == [] and registry.aliases() == {}


@pytest.mark.integration
@pytest.mark.parametrize("checked_in_time", [False, True], ids=["check-sees-it", "race-window"])
def test_a_cycle_whose_trainer_stalled_past_its_lock_ttl_publishes_and_promotes_nothing(
    tmp_path: Path,
    redis_settings: RedisSettings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    checked_in_time: bool,
) -> None:
    """Training stalls until the lock expired and another trainer took it. Either the lock
    check before publishing sees it, or (``race-window``: the check ran just before the lock
    expired) the registry refuses the stale token: nothing is published or promoted."""
    planted_scores(monkeypatch)
    service = gate_service(tmp_path, redis_settings, lock_ttl_s=1.5)
    namespace = redis_settings.namespace
    held: list[TrainingLock] = []
    successor = TrainingLock(redis_client, namespace, ttl_s=30)
    real_training_lock = service_module.training_lock

    @contextmanager
    def recorded(*args: Any, **kwargs: Any) -> Iterator[TrainingLock]:
        with real_training_lock(*args, **kwargs) as lock:
            held.append(lock)
            if checked_in_time:
                monkeypatch.setattr(lock, "still_held", lambda: True)
            yield lock

    def stalled_training(*args: object, **kwargs: object) -> tuple[object, None]:
        stall(held[0], redis_client, f"{namespace}:trainer:lock")
        assert successor.acquire()
        return scored_artifact(0.9, 0.5), None

    monkeypatch.setattr(service_module, "training_lock", recorded)
    monkeypatch.setattr(service_module, "train_model", stalled_training)
    try:
        with pytest.raises(LockLostError, match="fenced off" if checked_in_time else "expired"):
            service.cycle()
    finally:
        successor.release()
    with open_registry(tmp_path, redis_settings) as registry:
        assert registry.versions() == [] and registry.aliases() == {}


@pytest.mark.integration
def test_a_version_that_passes_the_gate_serves_as_canary_first_then_goes_to_production(
    tmp_path: Path,
    redis_settings: RedisSettings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted_scores(monkeypatch)
    service = gate_service(tmp_path, redis_settings, canary_s=1.5)
    with (
        open_registry(tmp_path, redis_settings) as registry,
        training_lock(redis_client, redis_settings.namespace, ttl_s=5) as lock,
    ):
        old = publish(registry, scored_artifact(0.8, 0.4))
        registry.promote(old)
        baseline = service.production_baseline(registry, service.datasets)
        seen: list[dict[str, int]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.append(registry.aliases())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        version, why_not = service.publish(
            registry, scored_artifact(0.9, 0.5, seed=3), 0.9, lock.fence(), baseline
        )
        done.set()
        watcher.join()
        seen.append(registry.aliases())
    assert why_not is None
    assert registry_state_before_and_after(seen, old, version), seen


def registry_state_before_and_after(seen: list[dict[str, int]], old: int, new: int) -> bool:
    """The aliases went production=old -> canary=new beside production=old (for a while) ->
    production=new, in that order."""
    stages = [
        {"production": old},
        {"production": old, "canary": new},
        {"production": new, "canary": new},
    ]
    order = [stages.index(state) for state in seen if state in stages]
    canary_readings = order.count(1)
    return order == sorted(order) and canary_readings >= 10 and order[-1] == 2


@pytest.mark.integration
def test_a_canary_stage_cut_short_by_a_stop_promotes_nothing(
    tmp_path: Path,
    redis_settings: RedisSettings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted_scores(monkeypatch)
    service = gate_service(tmp_path, redis_settings, canary_s=600)
    service._stopping.set()  # what run() does when the service is told to stop
    with (
        open_registry(tmp_path, redis_settings) as registry,
        training_lock(redis_client, redis_settings.namespace, ttl_s=5) as lock,
    ):
        old = publish(registry, scored_artifact(0.8, 0.4))
        registry.promote(old)
        baseline = service.production_baseline(registry, service.datasets)
        version, why_not = service.publish(
            registry, scored_artifact(0.9, 0.5, seed=4), 0.9, lock.fence(), baseline
        )
        assert registry.aliases() == {"production": old, "canary": version}
    assert why_not is not None and "stopped during its canary stage" in why_not
