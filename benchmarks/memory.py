"""Peak resident memory of a worker per model size.

One worker per model, all at once (memory is not a timing), each in its own group over the
same topic of ``memory_messages`` articles; when its group has committed the whole topic the
worker's ``VmHWM`` (peak resident set) is read from ``/proc``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.models import BenchModel, renamed
from benchmarks.plan import Plan
from benchmarks.streams import Topics, fill, messages
from benchmarks.workers import WorkerGroup
from messaging.admin import Admin
from messaging.admin import admin as admin_client
from schemas import Article


@dataclass(frozen=True)
class MemoryRow:
    model: str
    trained: bool
    parameters: int
    artifact_bytes: int
    peak_rss_bytes: int


def settings(topics: Topics, path: Path, name: str) -> dict[str, str]:
    return {
        "input_topic": topics.name("memory.in"),
        "output_topic": topics.name("memory.out"),
        "dlq_topic": topics.name("memory.dlq"),
        "group_id": topics.name(f"memory.{name}"),
        "model_path": str(path),
        "hot_swap": "false",
        "threads": "1",
        "device": "cpu",
    }


def wait_committed(group: WorkerGroup, count: int, timeout_s: float = 300.0) -> None:
    """Until the group has committed ``count`` messages of its one-partition input topic (by
    this worker or one it replaced)."""
    deadline = time.monotonic() + timeout_s
    name = group.settings["group_id"]
    with admin_client(group.kafka) as admin:
        while committed(admin, name) < count:
            worker = group.workers[0]
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited: {worker.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {name} did not commit {count} messages")
            time.sleep(0.5)


def committed(admin: Admin, group: str) -> int:
    return sum(admin.committed(group).values())


def measure(
    topics: Topics, models: list[BenchModel], articles: list[Article], plan: Plan, log_dir: Path
) -> tuple[list[MemoryRow], int]:
    """A row per model, and how many workers had to be replaced (see WorkerGroup)."""
    for name in ("memory.in", "memory.out", "memory.dlq"):
        topics.create(name)
    batch = renamed(articles, plan.memory_messages, "memory")
    fill(topics.settings, topics.name("memory.in"), messages(batch))
    groups = [
        WorkerGroup(
            f"memory-{m.name}", topics.settings, settings(topics, m.write(log_dir), m.name), log_dir
        ).start(1)
        for m in models
    ]
    try:
        peaks = []
        for group in groups:
            group.wait_ready()
            wait_committed(group, plan.memory_messages)
            peaks.append(group.workers[0].peak_rss_bytes())
    finally:
        for group in groups:
            group.stop()
    rows = [
        MemoryRow(m.name, m.trained, m.parameters, len(m.data), peak)
        for m, peak in zip(models, peaks, strict=True)
    ]
    return rows, sum(group.replaced for group in groups)
