"""Worker settings: read from TAGSTREAM_WORKER_*, checked at start, ids derived stably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from common.errors import ConfigError
from common.settings import load
from worker import app
from worker.settings import WorkerSettings
from worker.supervisor import slot_environment


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSTREAM_WORKER_PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("TAGSTREAM_WORKER_MAX_BATCH_SIZE", "128")
    settings = load(WorkerSettings)
    assert settings.exactly_once
    assert settings.max_batch_size == 128


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TAGSTREAM_WORKER_PROCESSING_GUARANTEE", "at_most_once"),
        ("TAGSTREAM_WORKER_DEVICE", "tpu"),
        ("TAGSTREAM_WORKER_MAX_BATCH_SIZE", "0"),
        ("TAGSTREAM_WORKER_MAX_WAIT_MS", "-1"),
        ("TAGSTREAM_WORKER_BREAKER_THRESHOLD", "1.5"),
        ("TAGSTREAM_WORKER_BREAKER_WINDOW", "0"),
        ("TAGSTREAM_WORKER_REFUSED_RETRIES", "-1"),
    ],
)
def test_a_bad_value_fails_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load(WorkerSettings)


def test_timeouts_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        load(WorkerSettings, session_timeout_ms=3000, heartbeat_interval_ms=2000)
    with pytest.raises(ConfigError, match="revoke_timeout_s"):
        load(WorkerSettings, session_timeout_ms=6000, revoke_timeout_s=10)
    with pytest.raises(ConfigError, match="breaker_backoff_initial_s"):
        load(WorkerSettings, breaker_backoff_initial_s=120, breaker_backoff_max_s=60)


def test_a_message_limit_below_the_body_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_message_bytes"):
        load(WorkerSettings, max_body_bytes=2048, max_message_bytes=1024)


def test_settings_are_frozen() -> None:
    settings = WorkerSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.max_batch_size = 3  # type: ignore[misc]


def test_the_transactional_id_is_stable_for_a_given_worker_id() -> None:
    settings = WorkerSettings(worker_id="slot-2", group_id="g")
    assert settings.transactional_id() == "tagstream-worker.g.slot-2"
    assert WorkerSettings(group_instance_id="static-1").resolved_worker_id() == "static-1"


def test_each_process_slot_gets_its_own_stable_id_instance_and_port() -> None:
    settings = WorkerSettings(worker_id="host", group_instance_id="inst", metrics_port=9400)
    assert slot_environment(settings, 2) == {
        "TAGSTREAM_WORKER_WORKER_ID": "host-2",
        "TAGSTREAM_WORKER_GROUP_INSTANCE_ID": "inst-2",
        "TAGSTREAM_WORKER_METRICS_PORT": "9402",
    }
    free_ports = WorkerSettings(worker_id="host", metrics_port=0)
    assert slot_environment(free_ports, 1) == {"TAGSTREAM_WORKER_WORKER_ID": "host-1"}


def test_the_first_signal_asks_for_a_drain_and_the_second_exits_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(app.os, "_exit", exits.append)  # the real one would end pytest
    stops: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with app.Signals(lambda: stops.append("drain")):
        signal.raise_signal(signal.SIGTERM)
        assert stops == ["drain"]
        assert exits == []
        signal.raise_signal(signal.SIGINT)
        assert exits == [128 + signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored on exit


def _transactional_id_in_a_new_process(env: dict[str, str]) -> str:
    """The transactional id a worker process started with ``env`` would use."""
    code = "from worker.settings import WorkerSettings; print(WorkerSettings().transactional_id())"
    base = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_a_restarted_worker_gets_its_predecessors_transactional_id() -> None:
    """Without any id set, two processes in turn (a worker and its restart) share one id."""
    env = {"TAGSTREAM_WORKER_GROUP_ID": "g"}
    first = _transactional_id_in_a_new_process(env)
    restarted = _transactional_id_in_a_new_process(env)
    assert first == restarted
    assert first.startswith("tagstream-worker.g.")


def test_the_slots_of_one_supervisor_get_different_ids_each_stable_across_restarts() -> None:
    settings = WorkerSettings(group_id="g")
    ids = [
        [
            _transactional_id_in_a_new_process(
                {"TAGSTREAM_WORKER_GROUP_ID": "g"} | slot_environment(settings, slot)
            )
            for _ in range(2)
        ]
        for slot in range(2)
    ]
    assert ids[0][0] == ids[0][1] and ids[1][0] == ids[1][1]
    assert ids[0][0] != ids[1][0]
