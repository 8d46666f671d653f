"""The monitor against the real Kafka and Redis and a real worker: a deliberately bad version
that passes every integrity check is promoted, scored on the live stream, and rolled back."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.settings import KafkaSettings, RedisSettings
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import synthetic_articles
from monitor.service import Monitor
from monitor.settings import MonitorSettings
from schemas import Article, LabelledArticle
from tests.monitor.support import PRIORS, with_thresholds
from tests.worker.harness import LABELS, InProcess, get
from tests.worker.kafka_tools import produce, wait_until

pytestmark = pytest.mark.integration


def feed(kafka: KafkaSettings, topics: dict[str, str], start: int, count: int) -> None:
    """``count`` articles to the input topic and, after them, their gold labels."""
    made = [
        LabelledArticle(id=f"art-{start + i}", title=a.title, body=a.body, labels=a.labels)
        for i, a in enumerate(synthetic_articles(LABELS, count, seed=start, prefix="m"))
    ]
    plain = [Article(id=a.id, title=a.title, body=a.body) for a in made]
    produce(kafka, topics["input"], [(a.id.encode(), a.model_dump_json().encode()) for a in plain])
    produce(
        kafka, topics["labelled"], [(a.id.encode(), a.model_dump_json().encode()) for a in made]
    )


@pytest.fixture
def running_monitor(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Any
) -> Iterator[Callable[..., Monitor]]:
    started: list[tuple[Monitor, threading.Thread]] = []

    def start(**values: Any) -> Monitor:
        monitor = Monitor(
            MonitorSettings(**values), kafka_settings, redis_settings, RegistrySettings()
        )
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        started.append((monitor, thread))
        wait_until(monitor.ready.is_set, 30, "the monitor reading")
        return monitor

    yield start
    for monitor, thread in started:
        monitor.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the monitor did not stop"


def test_a_bad_version_that_passes_every_check_is_rolled_back_on_live_quality(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Callable[[int], dict[str, str]],
    topic_factory: Callable[..., str],
    in_process: Callable[..., InProcess],
    running_monitor: Callable[..., Monitor],
) -> None:
    t = topics(2) | {"labelled": topic_factory(1, "labelled")}
    registry = Registry.from_settings(redis_settings, RegistrySettings())
    good, bad = with_thresholds(0.001, seed=0), with_thresholds(0.999, seed=0)
    v1 = registry.publish(good.to_bytes(), good.manifest)
    registry.promote(v1)
    monitor = running_monitor(
        predictions_topic=t["output"],
        labelled_topic=t["labelled"],
        start="beginning",
        min_labelled=100,
        check_interval_s=0.5,
        metrics_port=0,
    )
    worker = in_process(t)
    try:
        feed(kafka_settings, t, 0, 150)
        wait_until(lambda: monitor.join.joined.get(v1, 0) == 150, 60, "v1 scored on 150")
        assert monitor.verdicts == []
        v2 = registry.publish(bad.to_bytes(), bad.manifest)
        registry.promote(v2)
        wait_until(lambda: worker.worker.slot.version == v2, 30, "the worker serving v2")
        feed(kafka_settings, t, 150, 150)
        wait_until(lambda: bool(monitor.verdicts), 60, "a verdict on v2")
        assert registry.resolve("production") == v1
        wait_until(lambda: worker.worker.slot.version == v1, 30, "the worker back on v1")
        verdict = monitor.verdicts[0]
        assert (verdict.production, verdict.previous) == (v2, v1)
        assert "micro-F1" in verdict.reason
        live_v1, live_v2 = monitor.join.figures(v1), monitor.join.figures(v2)
        assert live_v2.count >= 100 and live_v2.micro_f1 == 0.0
        assert live_v1.micro_f1 > 0.5
        status, metrics = get(monitor.port, "/metrics")
        assert status == 200
        assert "tagstream_monitor_rollbacks_total 1.0" in metrics
        assert f'tagstream_monitor_live_micro_f1{{version="{v1}"}}' in metrics
        # Output drift: v1 labels all three alike, against priors of 0.7 / 0.2 / 0.1.
        even = 1 / 3
        expected = sum((even - q) * math.log(even / q) for q in PRIORS.values())
        (psi,) = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith(f'tagstream_monitor_output_psi{{version="{v1}"}}')
        ]
        assert psi == pytest.approx(expected, rel=1e-3)
        # It acts once: v2 promoted again by hand stays.
        registry.promote(v2)
        feed(kafka_settings, t, 300, 50)
        wait_until(lambda: monitor.join.joined.get(v2, 0) >= live_v2.count + 50, 60, "more v2")
        assert registry.resolve("production") == v2
        assert len(monitor.verdicts) == 1
    finally:
        registry.close()
