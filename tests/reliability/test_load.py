"""Scenario 8: twice the load one worker can take, for a while, then nothing more.

The worker's maximum is measured first, on a backlog, with a model of the ``full`` profile's
shape (taken from the profile: a 256-unit BiLSTM and the bag-of-words path) and articles as
long as Reuters ones. Then
articles are offered at twice that rate. The lag grows while the offer lasts and is worked
off after it, and every article is predicted. After a warm-up (allocator arenas, bigger
batches) the worker's memory stays flat while the backlog keeps growing: it pauses its
partitions while its intake is full, so the backlog waits in Kafka, not in the worker. CI
checks a generous bound; the flat second half is checked when the offer lasts a minute or
more (``make chaos``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from model.artifact import Artifact
from model.config import NetworkConfig
from model.network import build_network
from model.toy import synthetic_articles, toy_artifact
from schemas import Article
from tests.reliability.support import (
    Feeder,
    Lag,
    Sampler,
    Scale,
    metrics_port,
    record,
    rss_mib,
    sample_value,
    scrape,
    tally,
    timestamp,
)
from tests.worker.harness import LABELS, env_for
from tests.worker.kafka_tools import TopicReader, WorkerProcess, produce, wait_until
from trainer.profiles import profile

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def full_size_artifact() -> Artifact:
    """The toy model's encoder with the ``full`` profile's network (weights random)."""
    toy = toy_artifact(LABELS)
    config = NetworkConfig.for_data(
        profile("full"), vocab_size=toy.config.vocab_size, n_labels=len(LABELS)
    )
    state = {k: v.detach().clone() for k, v in build_network(config, seed=1).state_dict().items()}
    return dataclasses.replace(toy, config=config, state=state)


def long_articles(count: int, start: int) -> list[tuple[bytes, bytes]]:
    """Articles of up to 250 words (Reuters-21578 articles average about 130)."""
    made = synthetic_articles(LABELS, count, seed=start, max_words=250, prefix="load")
    return [
        (
            f"load-{start + i}".encode(),
            Article(id=f"load-{start + i}", title=a.title, body=a.body).model_dump_json().encode(),
        )
        for i, a in enumerate(made)
    ]


def test_twice_the_maximum_load_builds_lag_that_is_worked_off_in_bounded_memory(
    scale: Scale,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    t = topics(6)
    model = tmp_path / "full-size.safetensors"
    model.write_bytes(full_size_artifact().to_bytes())
    backlog = 3000
    produce(kafka_settings, t["input"], long_articles(backlog, 0))
    predictions = reader(t["output"])
    worker = processes(env_for(service_env, t, group_id, model_path=str(model)), "worker")
    port = metrics_port(worker)
    wait_until(lambda: len(predictions.ids()) >= backlog, scale.patience_s, "the backlog")
    maximum = _rate(predictions.snapshot())

    lag = Lag(kafka_settings, t["input"], group_id)
    memory = Sampler(lambda: rss_mib(worker.process.pid), 0.5)
    lags = Sampler(lag, 1.0)
    paused = Sampler(lambda: sample_value(scrape(port), "tagstream_worker_paused_partitions"), 0.5)
    try:
        offered = int(2 * maximum * scale.load_s)
        feeder = Feeder(kafka_settings, t["input"], _stream(offered, backlog), 2 * maximum)
        total = backlog + feeder.start().join(scale.load_s * 3)
        lag_at_end_of_offer = lag()
        wait_until(lambda: len(predictions.ids()) >= total, scale.patience_s, "the whole offer")
        wait_until(lambda: lag() == 0, 60, "every offset committed")
    finally:
        for sampler in (memory, lags, paused):
            sampler.stop()
        lag.close()
    drained_s = _since_offer_ended(lags, feeder)
    worker.signal(15)
    assert worker.wait() == 0

    counted = tally([f"load-{i}" for i in range(total)], predictions.ids(), 0)
    rss = memory.values()
    offer_s = feeder.finished - feeder.started
    growth = _peak(memory.samples, offer_s) - _peak(memory.samples, offer_s / 2)
    record(
        "8-load",
        max_rate=round(maximum),
        offered_rate=round(feeder.offered_rate),
        offer_s=round(feeder.finished - feeder.started, 1),
        peak_lag=int(max(lags.values())),
        lag_at_end_of_offer=int(lag_at_end_of_offer),
        worked_off_after_offer_s=round(drained_s, 1),
        rss_mib_first=round(rss[0]),
        rss_mib_max=round(max(rss)),
        rss_mib_last=round(rss[-1]),
        rss_mib_growth_second_half_of_offer=round(growth),
        rss_mib_every_5_s=_every(memory.samples, 5.0),
        lag_every_5_s=_every(lags.samples, 5.0),
        paused_partitions_max=int(max(paused.values(), default=0)),
        paused_share_of_samples=round(
            sum(v > 0 for v in paused.values()) / len(paused.values()), 2
        ),
        **counted.figures(),
    )
    assert counted.missing == 0
    assert lag_at_end_of_offer > maximum * scale.load_s / 4, "the lag grew during the offer"
    assert max(rss) < rss[0] + 500, "memory stayed within 500 MiB of its level at the start"
    if scale.load_s >= 60:  # long enough to see the curve flatten while the backlog grows
        assert growth < 100, f"{growth:.0f} MiB more over the offer's second half"
    assert max(paused.values()) > 0, "the worker paused its partitions (backpressure)"


def _stream(count: int, start: int) -> Iterator[tuple[bytes, bytes]]:
    """``count`` long articles from ``start`` on, made 500 at a time as they are sent."""
    for first in range(start, start + count, 500):
        yield from long_articles(min(500, start + count - first), first)


def _peak(samples: list[tuple[float, float]], until_s: float) -> float:
    """The highest sample up to ``until_s`` seconds."""
    return max(value for seconds, value in samples if seconds <= until_s)


def _every(samples: list[tuple[float, float]], step_s: float) -> list[int]:
    """One sample per ``step_s`` seconds, rounded: the shape of a curve in a few numbers."""
    kept, due = [], 0.0
    for seconds, value in samples:
        if seconds >= due:
            kept.append(round(value))
            due = seconds + step_s
    return kept


def _rate(records: list[dict[str, object]]) -> float:
    """Predictions per second, first to last ``classified_at``."""
    times = sorted(timestamp(str(r["classified_at"])) for r in records)
    return (len(times) - 1) / max(1e-6, times[-1] - times[0])


def _since_offer_ended(lags: Sampler, feeder: Feeder) -> float:
    """Seconds from the end of the offer to the first lag sample of zero after it."""
    offset = feeder.finished - lags.started
    zero = [s for s, value in lags.samples if s >= offset and value == 0]
    return (zero[0] if zero else lags.samples[-1][0]) - offset
