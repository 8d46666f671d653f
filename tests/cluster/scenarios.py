"""What the cluster fault scenarios share: their sizes, a stream with three worker processes
and the trainer on the three-node cluster, and the counting at the end.

Each scenario runs :class:`Stream`: fresh topics (replication factor 3, min ISR 2, the
cluster's defaults), three workers (``python -m worker``) in one group, the trainer service
storing labelled articles, and ``tagstream produce`` processes feeding both topics at a
steady rate (in processes of their own: they ride out the faults on their retries). The
test injects its fault while the stream runs; :meth:`Stream.finish` waits until every
article is predicted and every labelled one stored, stops everything with SIGTERM and
counts. Figures go through :func:`tests.reliability.support.record` (``RELIABILITY`` lines,
``TAGSTREAM_CHAOS_RESULTS``), sized by ``TAGSTREAM_CHAOS_SCALE``.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.settings import KafkaSettings
from corpus.jsonl import write_jsonl
from messaging import ensure_topics
from messaging.admin import admin
from model.toy import synthetic_articles
from tests.cluster.conftest import Cluster
from tests.reliability.support import (
    Tally,
    current_scale,
    describe,
    read_topic,
    stored_ids,
    tally,
)
from tests.reliability.support import trainer_env as _trainer_env
from tests.worker.harness import FAST, LABELS, expected_ids
from tests.worker.kafka_tools import TopicReader, WorkerProcess, explain_missing, wait_until

TAGSTREAM = [sys.executable, "-m", "tagstream"]
PARTITIONS = {"input": 6, "output": 3, "dlq": 1, "labelled": 2}


@dataclass(frozen=True)
class ClusterScale:
    """How big each cluster scenario runs."""

    articles: int
    stream_s: float
    """About how long the feed lasts: ``articles / stream_s`` per second."""
    leader_down_s: float
    controller_down_s: float
    cut_s: float
    """How long one worker is cut off; longer than its session timeout (6 s)."""
    min_isr_down_s: float
    patience_s: float


CLUSTER_SCALES = {
    "ci": ClusterScale(
        articles=1200,
        stream_s=30.0,
        leader_down_s=20.0,
        controller_down_s=8.0,
        cut_s=12.0,
        min_isr_down_s=8.0,
        patience_s=150.0,
    ),
    "long": ClusterScale(
        articles=12_000,
        stream_s=120.0,
        leader_down_s=20.0,
        controller_down_s=20.0,
        cut_s=40.0,
        min_isr_down_s=30.0,
        patience_s=600.0,
    ),
}

GUARANTEES = [
    "at_least_once",
    pytest.param("exactly_once", marks=pytest.mark.cluster_exactly_once),
]
"""Both guarantees; the exactly-once runs also carry their own marker, to run them alone."""


def cluster_scale() -> ClusterScale:
    return CLUSTER_SCALES[current_scale().name]


@dataclass
class Outcome:
    """What a finished stream produced."""

    counted: Tally
    records: list[dict[str, Any]]
    """Every committed prediction, with ``_partition`` and ``_timestamp`` (the Kafka record's
    CreateTime, seconds) of the output record added."""
    stored: int
    labelled: int
    exit_codes: list[int]

    def explain(self, total: int) -> str:
        return describe(self.records, expected_ids(total))


@dataclass
class Stream:
    """Three workers and the trainer on fresh topics of the cluster, fed at a steady rate."""

    cluster: Cluster
    service_env: dict[str, str]
    toy_model: Path
    processes: Callable[..., WorkerProcess]
    tmp_path: Path
    guarantee: str
    total: int
    rate: float
    relayed: set[int] = field(default_factory=set)
    producer_backend: str = "kafka-python"
    """``TAGSTREAM_KAFKA_PRODUCER_BACKEND`` of the workers."""
    """Slots whose worker reaches Kafka only through the relays."""
    restarts: list[dict[str, Any]] = field(default_factory=list)
    """Workers that stopped by themselves and were started again in their slot."""

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.topics = {name: f"{name}-{tag}" for name in PARTITIONS}
        self.group = f"workers-{tag}"
        ensure_topics(self.kafka, {self.topics[n]: p for n, p in PARTITIONS.items()})
        self.labelled = max(10, self.total // 10)
        self.env = self.service_env | {
            "TAGSTREAM_KAFKA_BOOTSTRAP": self.cluster.state.kafka_bootstrap
        }
        self.workers = [self._worker(slot) for slot in range(3)]
        self._instances = [[worker] for worker in self.workers]
        self.trainer = self.processes(
            _trainer_env(
                self.env,
                self.tmp_path,
                100,
                topic=self.topics["labelled"],
                group_id=f"trainer-{tag}",
                retrain_min_examples="1000000",  # stores only
            ),
            "trainer",
            [*TAGSTREAM, "trainer", "serve"],
        )
        for worker in self.workers:
            worker.wait_for("partitions assigned", 180)
        self.feeds = [
            self._feed("input", self.total, self.rate),
            self._feed("labelled", self.labelled, self.rate / 10),
        ]
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        """What a process manager (Kubernetes, systemd) does: a worker that exits by itself
        is started again in its slot, under the same worker id (so the new instance fences
        the old one's transaction). Each restart is noted with the reason the worker logged."""
        while not self._stopping.wait(0.5):
            for slot, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is None or self._stopping.is_set():
                    continue
                self.restarts.append({"slot": slot, "exit_code": code, "reason": _reason(worker)})
                self.workers[slot] = self._worker(slot, incarnation=len(self.restarts))
                self._instances[slot].append(self.workers[slot])

    def stop_supervising(self) -> None:
        """No more restarts: at the end, and when a test fails before its end (else the
        supervisor would start again each worker the ``processes`` fixture stops)."""
        self._stopping.set()
        self._supervisor.join(timeout=10)

    @property
    def kafka(self) -> KafkaSettings:
        return self.cluster.kafka

    def instances(self, slot: int) -> list[WorkerProcess]:
        """Every worker process that has run in ``slot``, the first one first."""
        return list(self._instances[slot])

    def worker_id(self, slot: int) -> str:
        return f"{self.tag}-{slot}"

    def _worker(self, slot: int, incarnation: int = 0) -> WorkerProcess:
        values = FAST | {
            "input_topic": self.topics["input"],
            "output_topic": self.topics["output"],
            "dlq_topic": self.topics["dlq"],
            "group_id": self.group,
            "worker_id": self.worker_id(slot),
            "model_path": str(self.toy_model),
            "processing_guarantee": self.guarantee,
            "log_level": "DEBUG",  # each committed transaction and where each reading starts
        }
        env = self.env | {f"TAGSTREAM_WORKER_{k.upper()}": v for k, v in values.items()}
        env["TAGSTREAM_KAFKA_PRODUCER_BACKEND"] = self.producer_backend
        if slot in self.relayed:
            env["TAGSTREAM_KAFKA_BOOTSTRAP"] = self.cluster.state.kafka_relay_bootstrap
        suffix = f"-{incarnation}" if incarnation else ""
        return self.processes(env, f"worker-{slot}{suffix}")

    def _feed(self, topic: str, count: int, rate: float) -> WorkerProcess:
        prefix = "art" if topic == "input" else "lab"
        made = synthetic_articles(LABELS, count, seed=4, prefix=prefix)
        path = self.tmp_path / f"{topic}.jsonl"
        write_jsonl(
            path, (a.model_copy(update={"id": f"{prefix}-{i}"}) for i, a in enumerate(made))
        )
        command = [*TAGSTREAM, "produce", "--file", str(path), "--topic", self.topics[topic]]
        command += ["--rate", str(rate)]
        if topic == "labelled":
            command.append("--labelled")
        return self.processes(self.env, f"produce-{topic}", command)

    # -- while it runs --------------------------------------------------------------------
    def predicted(self) -> int:
        """Articles the workers have logged as predicted (committed or not)."""
        return sum(line["articles"] for w in self.workers for line in w.events("batch"))

    def wait_under_way(self, fraction: float = 0.2) -> None:
        wait_until(lambda: self.predicted() >= self.total * fraction, 120, "the stream under way")

    def busiest_input_partition(self) -> tuple[int, int]:
        """The input partition with the most records so far, and its leader's node id."""
        with admin(self.kafka) as client:
            ends = client.end_offsets(self.topics["input"])
            leaders = {p.partition: p.leader for p in client.describe([self.topics["input"]])}
        busiest = max(ends, key=lambda tp: ends[tp]).partition
        return busiest, leaders[busiest]

    # -- at the end -----------------------------------------------------------------------
    def finish(self, patience_s: float) -> Outcome:
        """Wait for the feeds, every prediction and every stored example; stop; count."""
        codes = [feed.wait(patience_s) for feed in self.feeds]
        assert codes == [0, 0], "the feeds sent everything"
        predictions = TopicReader(self.kafka, self.topics["output"])
        try:
            wait_until(
                lambda: len(predictions.ids()) >= self.total,
                patience_s,
                "every article predicted",
                lambda: explain_missing(
                    self.kafka, self.topics, self.group, predictions, expected_ids(self.total)
                ),
            )
        finally:
            predictions.close()
        store = self.tmp_path / "store.db"
        wait_until(lambda: len(stored_ids(store)) >= self.labelled, patience_s, "all stored")
        self.stop_supervising()
        for process in [*self.workers, self.trainer]:
            if process.process.poll() is None:
                process.signal(15)
        exit_codes = [process.wait(120) for process in [*self.workers, self.trainer]]
        for slot, (worker, code) in enumerate(zip(self.workers, exit_codes, strict=False)):
            if code != 0 and _reason(worker):  # it had stopped by itself before the SIGTERM
                self.restarts.append({"slot": slot, "exit_code": code, "reason": _reason(worker)})
                exit_codes[slot] = 0
        records = read_topic(self.kafka, self.topics["output"])
        counted = tally(expected_ids(self.total), Counter(r["article_id"] for r in records))
        return Outcome(counted, records, len(stored_ids(store)), self.labelled, exit_codes)

    def figures(self, outcome: Outcome, **extra: Any) -> dict[str, Any]:
        return {
            "guarantee": self.guarantee,
            "producer_backend": self.producer_backend,
            "offered_rate": round(self.rate),
            **outcome.counted.figures(),
            "labelled_produced": outcome.labelled,
            "labelled_stored": outcome.stored,
            "workers_restarted": len(self.restarts),
            **extra,
        }


def _reason(worker: WorkerProcess) -> str:
    """The last line of the error a worker's failed stage logged ("" if none)."""
    failures = worker.events("stage failed")
    return str(failures[-1]["exception"]).strip().splitlines()[-1] if failures else ""


def first_prediction_after(
    records: list[dict[str, Any]],
    wall_time: float,
    partitions: set[int] | None = None,
    not_by: str | None = None,
) -> float | None:
    """Seconds from ``wall_time`` to the first committed prediction sent after it (for
    ``partitions`` of the input, by anyone but ``not_by``)."""
    later = [
        r["_timestamp"]
        for r in records
        if r["_timestamp"] > wall_time
        and (partitions is None or r["source"]["partition"] in partitions)
        and r["worker_id"] != not_by
    ]
    return round(min(later) - wall_time, 1) if later else None
