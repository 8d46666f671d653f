"""The inference circuit breaker on its own: when it opens, how long it waits, when it closes."""

from __future__ import annotations

import threading

import pytest

from worker.breaker import Breaker
from worker.metrics import Metrics


def breaker(metrics: Metrics, **overrides: float) -> Breaker:
    values: dict[str, float] = {
        "window": 4,
        "threshold": 0.5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
    }
    values |= overrides
    return Breaker(
        window=int(values["window"]),
        threshold=values["threshold"],
        backoff_initial_s=values["backoff_initial_s"],
        backoff_max_s=values["backoff_max_s"],
        metrics=metrics,
    )


def gauge(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("tagstream_worker_inference_breaker_open") or 0.0


def test_the_breaker_opens_once_the_share_of_failed_batches_in_the_window_is_reached() -> None:
    metrics = Metrics()
    b = breaker(metrics)
    b.failed("RuntimeError: boom")
    b.succeeded()
    b.succeeded()
    assert b.state == "closed", "one failure in a healthy window"
    b.failed("RuntimeError: boom")
    assert b.state == "open", "two of the last four failed"
    assert gauge(metrics) == 1
    assert "RuntimeError: boom" in b.describe()
    assert metrics.registry.get_sample_value("tagstream_worker_inference_breaker_trips_total") == 1


def test_failures_that_slid_out_of_the_window_do_not_count() -> None:
    b = breaker(Metrics())
    b.failed("x")
    for _ in range(4):
        b.succeeded()
    b.failed("x")
    assert b.state == "closed"


def test_after_the_backoff_one_trial_decides_a_failure_doubles_the_wait_a_success_closes() -> None:
    metrics = Metrics()
    b = breaker(metrics, window=1, threshold=1.0)
    halt = threading.Event()
    b.failed("x")
    assert b.state == "open"
    assert b.wait(halt)
    assert b.state == "half-open"
    b.failed("x")
    assert b.state == "open"
    assert b._backoff_s == pytest.approx(0.1)
    for _ in range(3):
        assert b.wait(halt)
        b.failed("x")
    assert b._backoff_s == pytest.approx(0.2), "the wait is bounded"
    assert b.wait(halt)
    b.succeeded()
    assert b.state == "closed"
    assert gauge(metrics) == 0
    assert b._backoff_s == pytest.approx(0.05), "a recovery resets the wait"
    assert metrics.registry.get_sample_value("tagstream_worker_inference_breaker_trips_total") == 1


def test_waiting_out_the_backoff_ends_when_the_worker_halts() -> None:
    b = breaker(Metrics(), window=1, threshold=1.0, backoff_initial_s=60, backoff_max_s=60)
    b.failed("x")
    halt = threading.Event()
    halt.set()
    assert not b.wait(halt)
    assert b.state == "open"


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        breaker(Metrics(), window=0)
    with pytest.raises(ValueError, match="threshold"):
        breaker(Metrics(), threshold=0)
    with pytest.raises(ValueError, match="backoff"):
        breaker(Metrics(), backoff_initial_s=2, backoff_max_s=1)


def test_a_drain_cuts_the_backoff_short_and_the_next_batch_is_the_trial() -> None:
    b = breaker(Metrics(), window=1, threshold=1.0, backoff_initial_s=600, backoff_max_s=600)
    b.failed("x")
    hurry = threading.Event()
    threading.Timer(0.05, hurry.set).start()
    assert b.wait(threading.Event(), hurry)
    assert b.state == "half-open"
