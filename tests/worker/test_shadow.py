"""Shadow scoring: the canary scores beside production, within its time budget, and never
changes what production publishes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from common.settings import KafkaSettings, RedisSettings
from messaging import Record
from model.registry import Registry
from model.settings import RegistrySettings
from monitor.service import Monitor
from monitor.settings import MonitorSettings
from tests.monitor.support import with_thresholds
from tests.worker.fakes import FakeModel, FakeSink, article
from tests.worker.harness import LABELS, InProcess, articles, expected_ids
from tests.worker.kafka_tools import TopicReader, produce, wait_until
from worker import shadow as shadow_module
from worker.decoding import to_items
from worker.inference import Model, Scorer
from worker.items import Polled
from worker.metrics import Metrics
from worker.results import Results
from worker.shadow import Shadow, ShadowSlot


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowModel(FakeModel):
    """A fake whose every article costs ``cost_s`` on the given clock; labels nothing."""

    def __init__(self, clock: Clock, cost_s: float, version: int = 2) -> None:
        super().__init__(version)
        self._clock = clock
        self._cost_s = cost_s

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self._clock.now += self._cost_s * len(token_ids)
        return np.zeros((len(token_ids), 2), dtype=np.float32)


def batch(count: int, start: int = 0) -> tuple[list[Any], list[Any]]:
    now = datetime.now(UTC)
    polled = [
        Polled(Record("in", 0, start + i, None, article(start + i), 0), 0, now)
        for i in range(count)
    ]
    production = FakeModel(1)
    items = to_items(polled, production, 1 << 20, max_message_bytes=1 << 20)
    rows = list(Scorer(None).score(production, [i.token_ids for i in items]).rows)
    return items, rows


def shadow_with(model: Model, metrics: Metrics, clock: Clock, sink: FakeSink | None) -> Shadow:
    slot = ShadowSlot(lambda version: model, metrics)
    slot._install(model)  # what the loader thread does once the version is warm
    return Shadow(
        slot,
        share=1.0,
        max_delay_ms=50,
        results=Results("out", "dlq", "w1"),
        sink=sink,
        topic="shadow" if sink is not None else None,
        metrics=metrics,
        scorer=Scorer(None),
        clock=clock,
    )


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"tagstream_worker_{name}", labels) or 0.0


def test_the_shadow_pass_keeps_to_its_budget_and_counts_what_it_skips() -> None:
    clock, metrics = Clock(), Metrics()
    shadow = shadow_with(SlowModel(clock, cost_s=0.010), metrics, clock, None)
    items, rows = batch(64)
    assert shadow.after(FakeModel(1), items, rows) == 5  # a probe of one, then four more
    for round_ in range(5):
        before = clock.now
        done = shadow.after(FakeModel(1), items, rows)
        assert done == 5, round_  # 50 ms at 10 ms an article
        assert clock.now - before == pytest.approx(0.050)
    assert value(metrics, "shadow_articles_total") == 30
    assert value(metrics, "shadow_skipped_total") == 6 * 59
    # production labels "earn" on every article, the shadow nothing: no agreement, one flip each
    assert value(metrics, "shadow_agreements_total") == 0
    assert value(metrics, "shadow_label_flips_total", label="earn") == 30


def test_the_shadow_records_carry_the_shadow_version_and_a_failing_shadow_is_harmless() -> None:
    clock, metrics, sink = Clock(), Metrics(), FakeSink()
    shadow = shadow_with(SlowModel(clock, cost_s=0.0001), metrics, clock, sink)
    items, rows = batch(10)
    shadow.after(FakeModel(1), items, rows)
    shadow.after(FakeModel(1), items, rows)
    wait_until(lambda: len(sink.on("shadow")) == 20, 10, "20 shadow records acknowledged")
    assert {r["model_version"] for r in sink.on("shadow")} == {2}
    assert value(metrics, "shadow_agreements_total") == 0

    broken = SlowModel(clock, 0.001)
    broken.scores = lambda token_ids: (_ for _ in ()).throw(RuntimeError("CUDA error"))  # type: ignore[method-assign]
    failing = shadow_with(broken, metrics, clock, None)
    failing._seconds_per_article = 0.001
    assert failing.after(FakeModel(1), items, rows) == 10  # tried; each failure isolated...
    assert value(metrics, "shadow_failures_total") == 10  # ...and counted, nothing raised
    assert value(metrics, "shadow_articles_total") == 20


def test_no_shadow_pass_when_the_canary_is_production_or_unset() -> None:
    clock, metrics = Clock(), Metrics()
    same = shadow_with(SlowModel(clock, 0.001, version=1), metrics, clock, None)
    items, rows = batch(8)
    assert same.after(FakeModel(1), items, rows) == 0
    slot = ShadowSlot(FakeModel, metrics)
    unset = Shadow(
        slot,
        share=1.0,
        max_delay_ms=50,
        results=Results("o", "d", "w"),
        sink=None,
        topic=None,
        metrics=metrics,
        scorer=Scorer(None),
    )
    assert unset.after(FakeModel(1), items, rows) == 0


def test_the_loader_follows_the_alias_and_retries_a_failing_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shadow_module, "RETRY_S", 0.05)
    metrics = Metrics()
    attempts: dict[int, int] = {}

    def load(version: int) -> Model:
        attempts[version] = attempts.get(version, 0) + 1
        if version == 3 and attempts[version] == 1:
            raise TimeoutError("Redis did not answer")
        return FakeModel(version)

    slot = ShadowSlot(load, metrics).start()
    try:
        slot.want(2)
        wait_until(lambda: (m := slot.current()) is not None and m.version == 2, 10, "v2 shadow")
        assert value(metrics, "shadow_model_version") == 2
        slot.want(3)  # the first attempt fails (a transient error): tried again
        wait_until(lambda: (m := slot.current()) is not None and m.version == 3, 10, "v3 shadow")
        assert attempts == {2: 1, 3: 2}
        slot.want(None)
        assert slot.current() is None
        assert value(metrics, "shadow_model_version") == 0
    finally:
        slot.stop()


@pytest.mark.integration
def test_a_worker_shadow_scores_with_the_canary_and_the_monitor_sees_the_disagreement(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Callable[[int], dict[str, str]],
    topic_factory: Callable[..., str],
    reader: Callable[..., TopicReader],
    in_process: Callable[..., InProcess],
) -> None:
    t = topics(2)
    shadow_topic = topic_factory(1, "shadow")
    registry = Registry.from_settings(redis_settings, RegistrySettings())
    everything, nothing = with_thresholds(0.001, seed=0), with_thresholds(0.999, seed=0)
    v1 = registry.publish(everything.to_bytes(), everything.manifest)
    registry.promote(v1)
    v2 = registry.publish(nothing.to_bytes(), nothing.manifest)
    registry.promote(v2, "canary")
    registry.close()
    monitor = Monitor(
        MonitorSettings(
            predictions_topic=t["output"],
            labelled_topic=topic_factory(1, "labelled"),
            shadow_topic=shadow_topic,
            start="beginning",
            metrics_port=None,
            auto_rollback=False,
            check_interval_s=0.5,
        ),
        kafka_settings,
        redis_settings,
        RegistrySettings(),
    )
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    live, shadowed = reader(t["output"]), reader(shadow_topic)
    worker = in_process(
        t, shadow_alias="canary", shadow_topic=shadow_topic, shadow_max_delay_ms="10000"
    )
    try:
        wait_until(
            lambda: (
                worker.worker.shadow_slot is not None
                and (m := worker.worker.shadow_slot.current()) is not None
                and m.version == v2
            ),
            30,
            "the canary loaded as the shadow",
        )
        produce(kafka_settings, t["input"], articles(300))
        wait_until(lambda: len(live.ids()) == 300, 60, "300 production predictions")
        wait_until(lambda: len(shadowed.ids()) == 300, 60, "300 shadow predictions")
        wait_until(lambda: monitor.agreement.share(v1, v2)[1] == 300, 30, "the monitor's pairs")
    finally:
        worker.stop()
        monitor.stop()
        thread.join(timeout=30)
    assert live.ids() == expected_ids(300)  # production unchanged: each exactly once...
    assert {r["model_version"] for r in live.snapshot()} == {v1}  # ...by production
    assert {r["model_version"] for r in shadowed.snapshot()} == {v2}
    assert all(r["labels"] == [] for r in shadowed.snapshot())
    assert worker.metric("shadow_articles_total") == 300
    assert worker.metric("shadow_agreements_total") == 0
    assert worker.metric("articles_by_source_total", source="unknown") == 300  # input drift
    assert worker.metric("tokens_total") > 0
    for label in LABELS:
        assert worker.metric("shadow_label_flips_total", label=label) == 300
    assert monitor.agreement.share(v1, v2) == (0.0, 300)


def test_input_drift_counts_tokens_unknown_tokens_and_a_bounded_set_of_sources() -> None:
    metrics = Metrics()
    metrics.observe_inputs([(5, 1, 1, 7), (1,), tuple(range(2, 302))], ["reuters", "ap", "ap"])
    metrics.observe_inputs([(3,)] * 60, [f"feed-{i}" for i in range(60)])
    assert value(metrics, "tokens_total") == 4 + 1 + 300 + 60
    assert value(metrics, "unknown_tokens_total") == 3
    assert value(metrics, "article_tokens_count") == 63
    assert value(metrics, "article_tokens_bucket", le="8.0") == 62
    assert value(metrics, "articles_by_source_total", source="ap") == 2
    assert value(metrics, "articles_by_source_total", source="feed-47") == 1  # 50 named...
    assert value(metrics, "articles_by_source_total", source="feed-48") == 0
    assert value(metrics, "articles_by_source_total", source="other") == 12  # ...then other
