"""Helpers for the worker's integration tests: produce, read back, committed offsets, and
worker processes whose JSON log lines can be waited on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from common.settings import KafkaSettings
from messaging import client_config
from messaging.producer import close_kafka_producer

ROOT = Path(__file__).resolve().parents[2]


def produce(
    kafka: KafkaSettings,
    topic: str,
    values: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partition: int | None = None,
) -> int:
    """Send (key, value) pairs and wait for all of them; returns how many. Raises if the
    broker refused any (kafka-python's ``flush`` does not)."""
    producer = KafkaProducer(**client_config(kafka), acks="all", linger_ms=5)
    sent: list[Any] = []
    try:
        for key, value in values:
            sent.append(producer.send(topic, key=key, value=value, partition=partition))
        producer.flush(timeout=30)
    finally:
        close_kafka_producer(producer, 5)
    _check_sent(topic, sent)
    return len(sent)


def produce_steadily(
    kafka: KafkaSettings, topic: str, values: list[tuple[bytes | None, bytes | None]], rate: float
) -> None:
    """Send ``values`` at about ``rate`` messages per second (in slices of 50 ms). Raises if
    the broker refused any."""
    producer = KafkaProducer(**client_config(kafka), acks="all", linger_ms=5)
    started = time.monotonic()
    pause = threading.Event()
    sent: list[Any] = []
    try:
        for count, (key, value) in enumerate(values):
            sent.append(producer.send(topic, key=key, value=value))
            ahead = started + count / rate - time.monotonic()
            if ahead > 0.05:
                pause.wait(ahead)
        producer.flush(timeout=30)
    finally:
        close_kafka_producer(producer, 5)
    _check_sent(topic, sent)


def _check_sent(topic: str, sent: list[Any]) -> None:
    failed = [future.exception for future in sent if not future.succeeded()]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(sent)} records not written to {topic}: {failed[0]!r}"
        )


class Feeding:
    """:func:`produce_steadily` on a thread; :meth:`join` raises what it raised."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        values: list[tuple[bytes | None, bytes | None]],
        rate: float,
    ) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                produce_steadily(kafka, topic, values, rate)
            except BaseException as exc:  # handed to the test's thread by join()
                self._error = exc

        self._thread = threading.Thread(target=run)
        self._thread.start()

    def join(self, timeout_s: float = 300) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"still producing after {timeout_s} s")
        if self._error is not None:
            raise self._error


class TopicReader:
    """Reads a whole topic from the beginning in a background thread (JSON values)."""

    def __init__(self, kafka: KafkaSettings, topic: str, *, read_committed: bool = True) -> None:
        self._consumer = KafkaConsumer(
            **client_config(kafka),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed" if read_committed else "read_uncommitted",
            auto_offset_reset="earliest",
        )
        partitions = self._consumer.partitions_for_topic(topic) or set()
        self._consumer.assign([TopicPartition(topic, p) for p in partitions])
        self._consumer.seek_to_beginning()
        self.records: list[dict[str, Any]] = []
        self._positions: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._read()
        except Exception as exc:  # kept for the test's thread: a dead reader must not look idle
            self._error = exc

    def _read(self) -> None:
        while not self._stop.is_set():
            for batch in self._consumer.poll(timeout_ms=100).values():
                with self._lock:
                    self.records += [json.loads(r.value) for r in batch]
            positions = {
                tp.partition: self._consumer.position(tp, timeout_ms=0)
                for tp in self._consumer.assignment()
            }
            with self._lock:
                self._positions = {p: at for p, at in positions.items() if at is not None}

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the topic reader stopped: {self._error!r}") from self._error

    def positions(self) -> dict[int, int]:
        """The next offset to be read, per partition whose position is known yet."""
        self._check()
        with self._lock:
            return dict(self._positions)

    def snapshot(self) -> list[dict[str, Any]]:
        self._check()
        with self._lock:
            return list(self.records)

    def ids(self) -> Counter[str]:
        return Counter(r["article_id"] for r in self.snapshot())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def committed_offsets(kafka: KafkaSettings, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(**client_config(kafka))
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str = "",
    explain: Callable[[], str] | None = None,
) -> None:
    """Wait for ``condition``; past ``timeout_s`` fail, with ``explain()`` in the message."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"not within {timeout_s} s: {what}{detail}")
        pause.wait(0.05)


def explain_missing(
    kafka: KafkaSettings,
    topics: dict[str, str],
    group: str,
    predictions: TopicReader,
    expected: Iterable[str],
) -> str:
    """Where the articles missing from ``predictions`` went: their input partition and offset
    beside the group's committed offsets, how many have a prediction written but not visible
    read_committed, and each output partition's end beside its last stable offset (an open
    transaction holds read_committed readers back at the second)."""
    missing = set(expected) - set(predictions.ids())
    inputs, _ = _read_all(kafka, topics["input"], "read_uncommitted")
    outputs, ends = _read_all(kafka, topics["output"], "read_uncommitted")
    _, stable = _read_all(kafka, topics["output"], "read_committed")
    source = {_field(r.value, "id"): (r.partition, r.offset) for r in inputs}
    written = {_field(r.value, "article_id") for r in outputs} & missing
    read_to = predictions.positions()
    first = sorted(missing, key=lambda name: source.get(name, (-1, -1)))[:12]
    return "\n".join(
        [
            f"{len(missing)} missing, {len(written)} of them written but not visible",
            "output partition: end / last stable / read to: "
            + ", ".join(f"{p}: {ends[p]} / {stable[p]} / {read_to.get(p)}" for p in sorted(ends)),
            f"committed input offsets: {dict(sorted(committed_offsets(kafka, group).items()))}",
            "missing (input partition, offset): "
            + ", ".join(f"{name} {source.get(name)}" for name in first),
        ]
    )


def _field(value: bytes | None, name: str) -> Any:
    """``name`` of a JSON object record, or None for anything else (hostile input included)."""
    try:
        decoded = json.loads(value or b"")
    except ValueError:
        return None
    return decoded.get(name) if isinstance(decoded, dict) else None


def _read_all(kafka: KafkaSettings, topic: str, isolation: str) -> tuple[list[Any], dict[int, int]]:
    """Every record of ``topic`` up to its end as ``isolation`` sees it (at most 20 s), and
    that end per partition."""
    consumer = KafkaConsumer(
        **client_config(kafka), group_id=None, enable_auto_commit=False, isolation_level=isolation
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 20

        def behind(tp: TopicPartition) -> bool:  # an unknown position counts as behind
            at = consumer.position(tp, timeout_ms=1000)
            return at is None or at < ends[tp]

        while time.monotonic() < deadline and any(behind(tp) for tp in parts):
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
        return records, {tp.partition: ends[tp] for tp in parts}
    finally:
        consumer.close()


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (any of its threads), from ``/proc``."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
        except FileNotFoundError:
            continue
    return found


def alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs (a killed process's leader turns zombie
    before its other threads are gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                if stat.read().split(") ", 1)[1][0] not in "ZX":
                    return True
        except FileNotFoundError:
            continue
    return False


class WorkerProcess:
    """``python -m worker`` (or the ``tagstream`` CLI) with its JSON log in a file."""

    def __init__(
        self, env: dict[str, str], log_path: Path, command: list[str] | None = None
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "worker"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        parsed = []
        lines = self.log_path.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines):
            if line.startswith("{"):
                try:
                    parsed.append(json.loads(line))
                except json.JSONDecodeError:
                    # Only the last line may be caught mid-write; any other broken record
                    # means the log writer split or merged lines, which readers must see.
                    if number < len(lines) - 1:
                        raise AssertionError(f"{self.log_path}: not one record: {line!r}") from None
        return parsed

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def wait_for(
        self,
        name: str,
        timeout_s: float = 60.0,
        where: Callable[[dict[str, Any]], bool] = lambda line: True,
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited {self.process.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            found[:] = [line for line in self.events(name) if where(line)]
            return bool(found)

        wait_until(seen, timeout_s, f"log event {name!r} in {self.log_path}")
        return found[-1]

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait(self, timeout_s: float = 60.0) -> int:
        return self.process.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
