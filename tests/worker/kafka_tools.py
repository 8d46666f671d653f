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
    """Send (key, value) pairs and wait for all of them; returns how many."""
    producer = KafkaProducer(**client_config(kafka), acks="all", linger_ms=5)
    count = 0
    try:
        for key, value in values:
            producer.send(topic, key=key, value=value, partition=partition)
            count += 1
        producer.flush(timeout=30)
    finally:
        close_kafka_producer(producer, 5)
    return count


def produce_steadily(
    kafka: KafkaSettings, topic: str, values: list[tuple[bytes | None, bytes | None]], rate: float
) -> None:
    """Send ``values`` at about ``rate`` messages per second (in slices of 50 ms)."""
    producer = KafkaProducer(**client_config(kafka), acks="all", linger_ms=5)
    started = time.monotonic()
    pause = threading.Event()
    try:
        for sent, (key, value) in enumerate(values):
            producer.send(topic, key=key, value=value)
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0.05:
                pause.wait(ahead)
        producer.flush(timeout=30)
    finally:
        close_kafka_producer(producer, 5)


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
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
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

    def positions(self) -> dict[int, int]:
        """The next offset to be read, per partition whose position is known yet."""
        with self._lock:
            return dict(self._positions)

    def snapshot(self) -> list[dict[str, Any]]:
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


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        pause.wait(0.05)


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
