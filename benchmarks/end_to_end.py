"""End to end through real worker processes: maximum throughput and latency under load for
both delivery guarantees, and scale-out from one worker to two.

Three lanes, each its own input and output topics of 4 partitions and its own group, all
started at once: one at-least-once worker, one exactly-once worker, and two at-least-once
workers sharing a group (2 + 2 partitions). Maximum throughput: a burst of articles sent as
fast as the producer goes, articles/s from the first message sent to the last prediction
received (``read_committed``); the lanes take turns burst by burst, so a noisy spell on the
shared machine hits them all. Latency: each guarantee's own median maximum x 25, 50 and 75 %,
offered on a steady schedule for ``load_seconds``, with the two-worker lane stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer

from benchmarks.models import renamed
from benchmarks.plan import Plan
from benchmarks.stats import Spread, percentiles, rate
from benchmarks.streams import Collector, Topics, messages, producer, send
from benchmarks.workers import WorkerGroup, WorkerProcess, mean_between
from schemas import Article

PARTITIONS = 4
LANES = {"at_least_once": 1, "exactly_once": 1, "scale_out": 2}
"""Lane name -> worker processes; ``scale_out`` is at-least-once."""


@dataclass(frozen=True)
class LoadResult:
    fraction: float
    offered_per_s: float
    achieved_per_s: float
    messages: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch_ms: float
    mean_batch_articles: float


@dataclass(frozen=True)
class GuaranteeResult:
    guarantee: str
    max_per_s: Spread
    mean_batch_articles: float
    mean_batch_ms: float
    padding_ratio: float
    """Mean over batches of the worker's padding-ratio metric, during the bursts."""
    cpu_cores: float
    """CPU seconds the lane's workers used per second of their bursts."""
    loads: list[LoadResult]


@dataclass(frozen=True)
class EndToEnd:
    guarantees: list[GuaranteeResult]
    scale_out: dict[int, Spread]
    """Articles/s by number of worker processes, on one topic of 4 partitions."""
    scale_out_cores: dict[int, float]
    serving_peak_rss_bytes: int
    """Of the at-least-once worker, after its bursts and loads."""
    replaced_workers: int
    """Workers that did not get their partitions and were started again (see WorkerGroup)."""
    model_only: Spread
    """The worker's scoring path in this process, timed between the bursts (articles/s)."""


@dataclass
class Lane:
    """Workers in one group, their topics, and a collector of their predictions."""

    name: str
    input_topic: str
    group: WorkerGroup
    collector: Collector

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.group.workers

    def close(self) -> None:
        self.group.stop()
        self.collector.close()


def lane_settings(topics: Topics, plan: Plan, model_path: Path, name: str) -> dict[str, str]:
    """``TAGSTREAM_WORKER_*`` of one lane: its topics and group, the plan's batch settings."""
    return {
        "input_topic": topics.create(f"{name}.in", PARTITIONS),
        "output_topic": topics.create(f"{name}.out", PARTITIONS),
        "dlq_topic": topics.create(f"{name}.dlq"),
        "group_id": topics.name(f"{name}.group"),
        "processing_guarantee": "exactly_once" if name == "exactly_once" else "at_least_once",
        "model_path": str(model_path),
        "hot_swap": "false",
        "max_batch_size": str(plan.worker_batch_size),
        "bucket_size": str(plan.worker_batch_size),
        "max_wait_ms": str(plan.max_wait_ms),
        "threads": "1",
        "device": "cpu",
    }


@contextmanager
def lanes(topics: Topics, plan: Plan, model_path: Path, log_dir: Path) -> Iterator[dict[str, Lane]]:
    """Every lane started and ready; everything stopped on the way out."""
    with ExitStack() as stack:
        ready = {}
        for name, count in LANES.items():
            settings = lane_settings(topics, plan, model_path, name)
            collector = Collector(topics.settings, settings["output_topic"])
            group = WorkerGroup(name, topics.settings, settings, log_dir, PARTITIONS)
            lane = Lane(name, settings["input_topic"], group, collector)
            stack.callback(lane.close)
            group.start(count)
            ready[name] = lane
        for lane in ready.values():
            lane.group.wait_ready()
        yield ready


def burst(lane: Lane, sender: KafkaProducer, batch: Sequence[Article]) -> float:
    """Seconds from the first message sent to the last prediction received."""
    sent = send(sender, lane.input_topic, messages(batch))
    received = lane.collector.wait_for(list(sent), timeout_s=60 + len(batch) / 20)
    return max(received.values()) - min(sent.values())


def cpu_seconds(lane: Lane) -> float:
    return sum(worker.cpu_seconds() for worker in lane.workers)


def maximum(
    ready: dict[str, Lane],
    sender: KafkaProducer,
    articles: list[Article],
    plan: Plan,
    reference: Callable[[], float],
) -> tuple[dict[str, GuaranteeResult], Spread]:
    """Bursts taking turns between the lanes, and a ``reference`` timing after each round:
    per lane articles/s and the first worker's batch metrics; the reference's spread."""
    for name, lane in ready.items():
        burst(lane, sender, renamed(articles, min(200, plan.burst), f"{name}-warm"))
    seconds: dict[str, list[float]] = {name: [] for name in ready}
    before = {name: lane.workers[0].metrics() for name, lane in ready.items()}
    cpu = {name: cpu_seconds(lane) for name, lane in ready.items()}
    references = []
    for repeat in range(plan.repeats):
        for name, lane in ready.items():
            batch = renamed(articles, plan.burst, f"{name}-{repeat}")
            seconds[name].append(burst(lane, sender, batch))
        references.append(reference())
    result = {}
    for name, lane in ready.items():
        after = lane.workers[0].metrics()
        result[name] = GuaranteeResult(
            guarantee=name,
            max_per_s=Spread.of([rate(plan.burst, s) for s in seconds[name]]),
            cpu_cores=(cpu_seconds(lane) - cpu[name]) / sum(seconds[name]),
            mean_batch_articles=mean_between(after, before[name], "batch_articles"),
            mean_batch_ms=1000 * mean_between(after, before[name], "inference_seconds"),
            padding_ratio=mean_between(after, before[name], "padding_ratio"),
            loads=[],
        )
    return result, Spread.of(references)


def offered(
    lane: Lane, sender: KafkaProducer, batch: Sequence[Article], fraction: float, top: float
) -> LoadResult:
    """Send ``batch`` at ``fraction`` x ``top`` per second; latencies from the timestamps."""
    worker = lane.workers[0]
    before = worker.metrics()
    sent = send(sender, lane.input_topic, messages(batch), fraction * top)
    received = lane.collector.wait_for(list(sent), timeout_s=60 + len(batch) / 20)
    after = worker.metrics()
    p50, p95, p99 = percentiles([1000 * (received[k] - sent[k]) for k in sent], (50, 95, 99))
    return LoadResult(
        fraction=fraction,
        offered_per_s=fraction * top,
        achieved_per_s=rate(len(batch), max(received.values()) - min(sent.values())),
        messages=len(batch),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_batch_ms=1000 * mean_between(after, before, "inference_seconds"),
        mean_batch_articles=mean_between(after, before, "batch_articles"),
    )


def under_load(
    lane: Lane, sender: KafkaProducer, articles: list[Article], top: float, plan: Plan
) -> list[LoadResult]:
    """One steady offered load per fraction of ``top``, lowest first."""
    results = []
    for fraction in plan.loads:
        count = max(10, int(fraction * top * plan.load_seconds))
        batch = renamed(articles, count, f"{lane.name}-load{fraction}")
        results.append(offered(lane, sender, batch, fraction, top))
    return results


def run(
    topics: Topics,
    plan: Plan,
    model_path: Path,
    articles: list[Article],
    log_dir: Path,
    reference: Callable[[], float],
) -> EndToEnd:
    """Sections 3 and 5 of the report (see the module docstring); ``reference`` times the
    model alone at the workers' batch settings, once per round of bursts."""
    sender = producer(topics.settings)
    try:
        with lanes(topics, plan, model_path, log_dir) as ready:
            results, model_only = maximum(ready, sender, articles, plan, reference)
            ready["scale_out"].close()
            for name in ("at_least_once", "exactly_once"):
                top = results[name].max_per_s.median
                results[name].loads.extend(under_load(ready[name], sender, articles, top, plan))
            peak = ready["at_least_once"].workers[0].peak_rss_bytes()
            replaced = sum(lane.group.replaced for lane in ready.values())
    finally:
        sender.close()
    return EndToEnd(
        guarantees=[results["at_least_once"], results["exactly_once"]],
        scale_out={1: results["at_least_once"].max_per_s, 2: results["scale_out"].max_per_s},
        scale_out_cores={1: results["at_least_once"].cpu_cores, 2: results["scale_out"].cpu_cores},
        serving_peak_rss_bytes=peak,
        replaced_workers=replaced,
        model_only=model_only,
    )
