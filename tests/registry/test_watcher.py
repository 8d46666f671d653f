"""The watcher reports alias changes within 1 s, by pub/sub or by polling, and stops cleanly."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable

import pytest

from common.settings import RedisSettings
from model import watcher as watcher_module
from model.registry import Registry
from model.settings import RegistrySettings
from model.watcher import AliasChange, AliasWatcher, diff_aliases
from schemas.manifest import ModelManifest
from tests.registry.support import RedisServer

Changes = queue.Queue[tuple[AliasChange, float]]


def test_diff_reports_each_alias_whose_version_differs() -> None:
    before = {"production": 1, "canary": 2}
    after = {"production": 3, "canary": 2}
    assert diff_aliases(before, after) == [AliasChange("production", 3, 1)]
    assert diff_aliases({}, {"canary": 4}) == [AliasChange("canary", 4, None)]
    assert diff_aliases({"canary": 4}, {}) == [AliasChange("canary", None, 4)]
    assert diff_aliases(after, after) == []


def recorder() -> tuple[Changes, Callable[[AliasChange], None]]:
    changes: Changes = queue.Queue()
    return changes, lambda change: changes.put((change, time.monotonic()))


def promote_and_time(
    registry: Registry, version: int, changes: Changes, alias: str = "production"
) -> tuple[AliasChange, float]:
    started = time.monotonic()
    registry.promote(version, alias)
    change, seen = changes.get(timeout=5)
    return change, seen - started


@pytest.mark.integration
def test_pubsub_delivers_a_promote_within_one_second_without_polling(
    registry: Registry, manifest: ModelManifest
) -> None:
    old, new = (registry.publish(os.urandom(100), manifest) for _ in range(2))
    registry.promote(old)
    changes, record = recorder()
    with AliasWatcher(registry, record, pubsub=True, poll_interval_s=60):
        change, latency = promote_and_time(registry, new, changes)
        assert change == AliasChange("production", new, old)
        assert latency < 1.0
        registry.rollback()
        assert changes.get(timeout=1)[0] == AliasChange("production", old, new)


@pytest.mark.integration
def test_polling_delivers_a_promote_within_one_second_with_pubsub_off(
    registry: Registry, manifest: ModelManifest
) -> None:
    version = registry.publish(os.urandom(100), manifest)
    changes, record = recorder()
    with AliasWatcher(registry, record, pubsub=False, poll_interval_s=0.5):
        change, latency = promote_and_time(registry, version, changes, "canary")
    assert change == AliasChange("canary", version, None)
    assert latency < 1.0


@pytest.mark.integration
def test_stop_returns_promptly_and_ends_the_thread(registry: Registry) -> None:
    watcher = AliasWatcher(registry, lambda change: None, pubsub=True, poll_interval_s=60)
    watcher.start()
    assert watcher.running
    started = time.monotonic()
    watcher.stop()
    assert not watcher.running
    assert time.monotonic() - started < 1.0


@pytest.mark.integration
def test_a_failing_callback_does_not_stop_the_watcher(
    registry: Registry, manifest: ModelManifest
) -> None:
    first, second = (registry.publish(os.urandom(100), manifest) for _ in range(2))
    changes, record = recorder()
    calls = []

    def flaky(change: AliasChange) -> None:
        calls.append(change)
        if len(calls) == 1:
            raise RuntimeError("callback bug")
        record(change)

    with AliasWatcher(registry, flaky, pubsub=True, poll_interval_s=60):
        registry.promote(first)
        assert_eventually_called(calls, 1)
        registry.promote(second)
        assert changes.get(timeout=1)[0] == AliasChange("production", second, first)


def assert_eventually_called(calls: list[AliasChange], count: int) -> None:
    deadline = time.monotonic() + 2
    while len(calls) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= count


@pytest.mark.integration
def test_pubsub_resumes_after_redis_restarts(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
) -> None:
    server = private_redis()
    redis_settings = RedisSettings(url=server.url, namespace="restart", socket_timeout_s=1)
    changes, record = recorder()
    with (
        Registry.from_settings(redis_settings, registry_settings) as registry,
        AliasWatcher(registry, record, pubsub=True, poll_interval_s=60),
    ):
        server.stop()
        server.start()
        versions = [registry.publish(os.urandom(100), manifest) for _ in range(2)]
        registry.promote(versions[1])
        change, _ = changes.get(timeout=5)
        assert change == AliasChange("production", versions[1], None)


class EventLog:
    """Stands in for a module's structlog logger; keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _record(self, event: str, *args: object, **fields: object) -> None:
        self.events.append(event)

    info = warning = error = exception = debug = _record


@pytest.mark.integration
def test_an_outage_is_logged_once_and_the_recovery_once(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polling every 0.2 s through a 2 s outage: one warning, then one recovery line."""
    logged = EventLog()
    monkeypatch.setattr(watcher_module, "log", logged)
    server = private_redis()
    redis_settings = RedisSettings(url=server.url, namespace="outage", socket_timeout_s=1)
    changes, record = recorder()
    with (
        Registry.from_settings(redis_settings, registry_settings) as registry,
        AliasWatcher(registry, record, pubsub=False, poll_interval_s=0.2),
    ):
        server.stop()
        time.sleep(2)
        server.start()
        version = registry.publish(os.urandom(100), manifest)
        registry.promote(version)
        assert changes.get(timeout=5)[0] == AliasChange("production", version, None)
    assert logged.events.count("alias watcher read failed") == 1
    assert logged.events.count("alias watcher recovered") == 1


@pytest.mark.integration
def test_a_non_integer_alias_value_is_logged_and_watching_goes_on(
    registry: Registry, manifest: ModelManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = EventLog()
    monkeypatch.setattr(watcher_module, "log", logged)
    first, second = (registry.publish(os.urandom(100), manifest) for _ in range(2))
    registry.promote(first)
    changes, record = recorder()
    with AliasWatcher(registry, record, pubsub=False, poll_interval_s=0.1) as watcher:
        registry.client.hset(registry.keys.aliases, "production", "not-a-version")
        wait_for_event(logged, "alias value malformed; keeping the last known version")
        assert watcher.running
        assert changes.empty()  # the last known version stands; nothing to swap to
        registry.promote(second)
        assert changes.get(timeout=5)[0] == AliasChange("production", second, first)
    assert logged.events.count("alias value malformed; keeping the last known version") == 1


def wait_for_event(logged: EventLog, event: str) -> None:
    deadline = time.monotonic() + 5
    while event not in logged.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert event in logged.events


@pytest.mark.integration
def test_an_alias_re_set_to_the_version_it_holds_is_reported(
    registry: Registry, manifest: ModelManifest
) -> None:
    version = registry.publish(os.urandom(100), manifest)
    registry.promote(version)
    changes, record = recorder()
    with AliasWatcher(registry, record, pubsub=False, poll_interval_s=0.1):
        registry.promote(version)
        assert changes.get(timeout=5)[0] == AliasChange("production", version, version)
    assert registry.history("production") == []  # a re-set is no new holder to roll back from


@pytest.mark.integration
def test_a_watcher_started_from_a_known_version_reports_a_change_that_came_before(
    registry: Registry, manifest: ModelManifest
) -> None:
    """The caller loaded ``old``; the alias moved to ``new`` before the watcher started."""
    old, new = (registry.publish(os.urandom(100), manifest) for _ in range(2))
    registry.promote(old)
    registry.promote(new)
    changes, record = recorder()
    with AliasWatcher(registry, record, pubsub=True, poll_interval_s=60, known={"production": old}):
        assert changes.get(timeout=5)[0] == AliasChange("production", new, old)


@pytest.mark.integration
def test_an_unexpected_error_in_a_reading_is_logged_once_and_watching_goes_on(
    registry: Registry, manifest: ModelManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = EventLog()
    monkeypatch.setattr(watcher_module, "log", logged)
    version = registry.publish(os.urandom(100), manifest)
    changes, record = recorder()
    with AliasWatcher(registry, record, pubsub=False, poll_interval_s=0.05) as watcher:
        real, failures = registry.alias_state, []

        def failing_a_while() -> object:
            if len(failures) < 5:
                failures.append(1)
                raise TypeError("a reply of an unexpected shape")
            return real()

        monkeypatch.setattr(registry, "alias_state", failing_a_while)
        registry.promote(version)
        assert changes.get(timeout=5)[0] == AliasChange("production", version, None)
        assert watcher.running
    assert len(failures) == 5
    assert logged.events.count("alias watcher check failed") == 1
