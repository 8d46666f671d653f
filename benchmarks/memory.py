"""Peak resident memory of a worker per model size.

One worker per model, all at once (memory is not a timing), each in its own group over the
same topic of ``memory_messages`` articles; when a worker has published every prediction its
``VmHWM`` (peak resident set) is read from ``/proc``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.models import BenchModel, renamed
from benchmarks.plan import Plan
from benchmarks.streams import Topics, fill, messages
from benchmarks.workers import WorkerGroup, WorkerProcess
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


def wait_published(worker: WorkerProcess, count: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.metrics().get("predictions_published_total", 0.0) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {worker.name} did not publish {count} predictions")
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker {worker.name} exited: {worker.tail()}")
        time.sleep(0.2)


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
            wait_published(group.workers[0], plan.memory_messages)
            peaks.append(group.workers[0].peak_rss_bytes())
    finally:
        for group in groups:
            group.stop()
    rows = [
        MemoryRow(m.name, m.trained, m.parameters, len(m.data), peak)
        for m, peak in zip(models, peaks, strict=True)
    ]
    return rows, sum(group.replaced for group in groups)
