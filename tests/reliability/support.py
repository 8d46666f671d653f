"""What the reliability scenarios share: their scale, their figures, and the probes they use.

``TAGSTREAM_CHAOS_SCALE`` picks the sizes: ``ci`` (default, the whole suite in about six
minutes on two cores) or ``long`` (the issue's sizes: 20,000 articles, a dozen kills, a 30 s
Redis outage, two minutes of overload; ``make chaos``). Every scenario records its figures
with :func:`record`: one ``RELIABILITY {...}`` line on stdout and, when
``TAGSTREAM_CHAOS_RESULTS`` names a file, one JSON line appended to it (docs/reliability.md
is written from those).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from common.settings import KafkaSettings
from corpus.jsonl import write_jsonl
from messaging import client_config
from messaging.producer import close_kafka_producer
from model.toy import synthetic_articles
from tagstream.stack import LocalStack, StackSettings, StackState
from tests.worker.harness import LABELS, articles
from tests.worker.kafka_tools import WorkerProcess, wait_until


@dataclass(frozen=True)
class Scale:
    """How big each scenario runs."""

    name: str
    crash_articles: int
    crash_kills: int
    crash_interval_s: float
    restart_articles: int
    broker_down_s: float
    outage_articles: int
    redis_down_s: float
    load_s: float
    hostile_examples: int
    patience_s: float
    """How long a scenario may wait for its stream to be worked off."""


SCALES = {
    "ci": Scale(
        name="ci",
        crash_articles=2000,
        crash_kills=4,
        crash_interval_s=2.0,
        restart_articles=2500,
        broker_down_s=5.0,
        outage_articles=1500,
        redis_down_s=8.0,
        load_s=12.0,
        hostile_examples=3,
        patience_s=120.0,
    ),
    "long": Scale(
        name="long",
        crash_articles=20_000,
        crash_kills=12,
        crash_interval_s=3.0,
        restart_articles=20_000,
        broker_down_s=15.0,
        outage_articles=10_000,
        redis_down_s=30.0,
        load_s=120.0,
        hostile_examples=20,
        patience_s=600.0,
    ),
}


TINY_PROFILE = {
    "max_epochs": 1,
    "glove": False,
    "embedding_dim": 16,
    "hidden_size": 16,
    "max_tokens": 64,
    "vocab_size": 2000,
}
"""Trainer profile overrides for a cycle of a few seconds: scenarios test that a cycle reaches
Kafka and Redis, not the model's quality."""


def trainer_env(
    env: dict[str, str], tmp_path: Path, seed_articles: int, **settings: str
) -> dict[str, str]:
    """``env`` plus a trainer's settings: a synthetic seed corpus of ``seed_articles`` in
    ``tmp_path``, its store there, topic ``labelled``, group ``trainer``, no metrics port, the
    tiny profile; ``settings`` (lower-case names) add or replace."""
    seed = tmp_path / "seed.jsonl"
    write_jsonl(seed, synthetic_articles(LABELS, seed_articles, seed=1, prefix="seed"))
    values = {
        "topic": "labelled",
        "group_id": "trainer",
        "seed_path": str(seed),
        "store_path": str(tmp_path / "store.db"),
        "profile_overrides": json.dumps(TINY_PROFILE),
        "metrics_port": "0",
    } | settings
    return env | {f"TAGSTREAM_TRAINER_{k.upper()}": v for k, v in values.items()}


def current_scale() -> Scale:
    name = os.environ.get("TAGSTREAM_CHAOS_SCALE", "ci")
    if name not in SCALES:
        raise ValueError(f"TAGSTREAM_CHAOS_SCALE={name!r}: expected one of {sorted(SCALES)}")
    return SCALES[name]


def record(scenario: str, **figures: Any) -> None:
    """Print the scenario's figures and append them to ``$TAGSTREAM_CHAOS_RESULTS``."""
    line = json.dumps({"scenario": scenario, "scale": current_scale().name, **figures})
    print(f"RELIABILITY {line}")
    path = os.environ.get("TAGSTREAM_CHAOS_RESULTS")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with Path(path).open("a") as out:
            out.write(line + "\n")


# -- counting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tally:
    """The issue's counts for one run: what went in and what came out."""

    produced: int
    predicted: int
    """Distinct articles with at least one prediction."""
    missing: int
    duplicated: int
    """Predictions beyond the first for an article."""
    dead_lettered: int

    def figures(self) -> dict[str, int]:
        return asdict(self)


def tally(expected: Iterable[str], predicted: Counter[str], dead_lettered: int = 0) -> Tally:
    wanted = set(expected)
    return Tally(
        produced=len(wanted),
        predicted=len(wanted & set(predicted)),
        missing=len(wanted - set(predicted)),
        duplicated=sum(predicted.values()) - len(predicted),
        dead_lettered=dead_lettered,
    )


def describe(records: Sequence[dict[str, Any]], expected: Iterable[str], limit: int = 10) -> str:
    """What went wrong, for an assertion message: some missing ids and some duplicates with
    the source offset, worker and time of each copy."""
    copies: dict[str, list[str]] = {}
    for r in records:
        copies.setdefault(r["article_id"], []).append(
            f"p{r['source']['partition']}@{r['source']['offset']} by {r['worker_id']}"
            f" at {r['classified_at'][11:23]}"
        )
    missing = [i for i in expected if i not in copies]
    twice = {i: c for i, c in copies.items() if len(c) > 1}
    return (
        f"{len(missing)} missing, e.g. {missing[:limit]}; "
        f"{len(twice)} predicted more than once, e.g. {dict(list(twice.items())[:limit])}"
    )


def settled(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``condition`` held within ``timeout_s``; the caller's assertions say why not."""
    try:
        wait_until(condition, timeout_s)
    except AssertionError:
        return False
    return True


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every committed record of ``topic`` (JSON values, with ``_partition`` and ``_timestamp``,
    the record's CreateTime in seconds, added), read until each partition's end.

    A read_committed consumer's end offset is the last stable offset, so once no
    transaction is open this is everything the topic will ever show a reader.
    """
    consumer = KafkaConsumer(
        **client_config(kafka),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not read to its end within {timeout_s} s")
            for tp, batch in consumer.poll(timeout_ms=200).items():
                for r in batch:
                    value = json.loads(r.value)
                    value["_partition"] = tp.partition
                    value["_timestamp"] = r.timestamp / 1000
                    records.append(value)
        return records
    finally:
        consumer.close()


class Lag:
    """A group's lag on a topic, as the broker sees it: end offsets minus committed offsets."""

    def __init__(self, kafka: KafkaSettings, topic: str, group: str) -> None:
        self._admin = KafkaAdminClient(**client_config(kafka))
        self._consumer = KafkaConsumer(**client_config(kafka), group_id=None)
        self._partitions = [
            TopicPartition(topic, p) for p in self._consumer.partitions_for_topic(topic) or ()
        ]
        self._group = group

    def __call__(self) -> float:
        committed = self._admin.list_group_offsets(self._group).get(self._group, {})
        ends = self._consumer.end_offsets(self._partitions)
        return float(sum(end - max(0, _offset(committed.get(tp))) for tp, end in ends.items()))

    def close(self) -> None:
        self._admin.close()
        self._consumer.close()


def _offset(committed: Any) -> int:
    return -1 if committed is None else int(committed.offset)


def longest_gap_s(predictions: Sequence[dict[str, Any]]) -> float:
    """The longest pause between consecutive predictions, by their ``classified_at``."""
    times = sorted(timestamp(p["classified_at"]) for p in predictions)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time."""
    return datetime.fromisoformat(text).timestamp()


def stored_ids(store: Path) -> list[str]:
    """Article ids in the trainer's example store (one row per id; none if it is not there)."""
    if not store.exists():
        return []
    with closing(sqlite3.connect(store)) as db:
        try:
            return [row[0] for row in db.execute("SELECT article_id FROM examples")]
        except sqlite3.OperationalError as exc:  # the trainer has created the file, not yet
            if "no such table" in str(exc):  # its schema: nothing stored yet
                return []
            raise


# -- producing at a steady rate ---------------------------------------------------------------
def endless_articles(chunk: int = 500) -> Iterator[tuple[bytes, bytes]]:
    """``art-0``, ``art-1``, ... as (key, value) pairs, made ``chunk`` at a time."""
    for start in itertools.count(0, chunk):
        yield from articles(chunk, start)


class Feeder:
    """Sends (key, value) pairs from a thread at ``rate`` per second until they run out or
    :meth:`stop` is called. Not for a broker outage: see ``test_broker_restart``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        values: Iterable[tuple[bytes | None, bytes | None]],
        rate: float,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._values = values
        self._rate = rate
        self._stop = threading.Event()
        self.sent = 0
        self.failed: list[BaseException] = []
        self.started = 0.0
        self.finished = 0.0
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send nothing more (what is sent is still flushed)."""
        self._stop.set()

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self._send_all()
        except Exception as exc:  # reported by join()
            self.failed.append(RuntimeError(repr(exc)))
        finally:
            self.finished = time.monotonic()

    def _send_all(self) -> None:
        producer = KafkaProducer(
            **client_config(self._kafka),
            acks="all",
            linger_ms=5,
            delivery_timeout_ms=180_000,
            max_block_ms=120_000,
        )
        try:
            for key, value in self._values:
                due = self.started + self.sent / self._rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                future = producer.send(self._topic, key=key, value=value)
                future.add_errback(lambda exc: self.failed.append(RuntimeError(repr(exc))))
                self.sent += 1
            producer.flush(timeout=180)
        finally:
            close_kafka_producer(producer, 10)

    def join(self, timeout_s: float = 300.0) -> int:
        """Wait until every value sent is acknowledged; returns how many were sent."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the feeder did not finish"
        assert not self.failed, f"the feeder lost messages: {self.failed[:3]}"
        return self.sent

    @property
    def offered_rate(self) -> float:
        return self.sent / max(1e-9, (self.finished or time.monotonic()) - self.started)


# -- sampling ---------------------------------------------------------------------------------
@dataclass
class Sampler:
    """Calls ``probe`` every ``interval_s`` from a thread and keeps (seconds, value) pairs."""

    probe: Callable[[], float | None]
    interval_s: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self.started = time.monotonic()
        """Samples are timed in seconds from here (``time.monotonic``)."""
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.probe()
            except Exception:  # a probe of a restarting server may fail; the next one counts
                value = None
            if value is not None:
                self.samples.append((time.monotonic() - self.started, value))
            self._stop.wait(self.interval_s)

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples

    def values(self) -> list[float]:
        return [value for _, value in self.samples]


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- worker processes -------------------------------------------------------------------------
def metrics_port(worker: WorkerProcess, timeout_s: float = 90.0) -> int:
    return int(worker.wait_for("health and metrics listening", timeout_s)["port"])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def sample_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class Fleet:
    """Worker processes in fixed slots (``worker_id`` ``slot-i``) that can be killed and
    restarted; every incarnation logs to its own file."""

    def __init__(self, env: dict[str, str], log_dir: Path, slots: int) -> None:
        self._env = env
        self._log_dir = log_dir
        self.current: list[WorkerProcess] = []
        self.all: list[WorkerProcess] = []
        self.kills: list[tuple[int, float]] = []
        for slot in range(slots):
            self.current.append(self._spawn(slot))

    def _spawn(self, slot: int) -> WorkerProcess:
        env = self._env | {"TAGSTREAM_WORKER_WORKER_ID": f"slot-{slot}"}
        worker = WorkerProcess(env, self._log_dir / f"slot-{slot}-{len(self.all)}.log")
        self.all.append(worker)
        return worker

    def kill_and_restart(self, rng: random.Random, timeout_s: float) -> int:
        """SIGKILL a random worker that holds partitions while another one does too, and
        start a new one in its slot; returns the slot. One crash at a time: the stream
        never stops for want of a live worker, however slowly restarts come up."""
        wait_until(lambda: len(self.working()) >= 2, timeout_s, "two workers holding partitions")
        slot = rng.choice(self.working())
        self.current[slot].kill()
        self.kills.append((slot, time.monotonic()))
        self.current[slot] = self._spawn(slot)
        return slot

    def working(self) -> list[int]:
        """Slots whose worker runs and was last assigned some partitions."""
        return [i for i, w in enumerate(self.current) if _holds_partitions(w)]

    def wait_assigned(self, timeout_s: float = 120.0) -> None:
        for worker in self.current:
            worker.wait_for("partitions assigned", timeout_s)

    def terminate(self, timeout_s: float = 90.0) -> list[int]:
        """SIGTERM every live worker; their exit codes."""
        for worker in self.current:
            if worker.process.poll() is None:
                worker.signal(15)
        return [worker.wait(timeout_s) for worker in self.current]

    def close(self) -> None:
        for worker in self.all:
            worker.close()

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {w.log_path.name} ---\n"
            + "\n".join(w.log_path.read_text(errors="replace").splitlines()[-lines:])
            for w in self.all
        )


def _holds_partitions(worker: WorkerProcess) -> bool:
    assigned = worker.events("partitions assigned")
    return worker.process.poll() is None and bool(assigned and assigned[-1]["partitions"])


# -- a stack of the test's own ----------------------------------------------------------------
@contextmanager
def private_stack(directory: Path) -> Iterator[tuple[LocalStack, StackState]]:
    """A Kafka + Redis pair for one test, which may stop and restart them; always downed."""
    local = LocalStack(StackSettings(dir=directory))
    state, _ = local.up()
    try:
        yield local, state
    finally:
        local.down(discard=True)


def wait_for_growth(count: Callable[[], int], timeout_s: float, what: str) -> float:
    """Seconds until ``count()`` exceeds its value now."""
    start, before = time.monotonic(), count()
    wait_until(lambda: count() > before, timeout_s, what)
    return time.monotonic() - start
