"""Fixtures of the reliability suite: its scale, a toy model, topics, readers and processes.

Scenarios that stop Kafka or Redis start a stack of their own (``support.private_stack``)
so the session's servers, which other tests use, are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from common.settings import KafkaSettings
from model.toy import toy_artifact
from tests.reliability.support import Scale, current_scale
from tests.worker.kafka_tools import TopicReader, WorkerProcess
from tests.worker.test_worker_kafka import LABELS


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """In-process workers and model wrappers share two cores with everything else."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "toy.safetensors"
    path.write_bytes(toy_artifact(LABELS).to_bytes())
    return path


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> Callable[[int], dict[str, str]]:
    """``topics(partitions)``: input, output (3 partitions) and dead-letter topics."""

    def create(partitions: int) -> dict[str, str]:
        return {
            "input": topic_factory(partitions, "in"),
            "output": topic_factory(3, "out"),
            "dlq": topic_factory(1, "dlq"),
        }

    return create


@pytest.fixture
def reader(kafka_settings: KafkaSettings) -> Iterator[Callable[..., TopicReader]]:
    """``reader(topic, kafka=None)``: a read_committed reader of a topic, closed at the end."""
    readers: list[TopicReader] = []

    def open_reader(topic: str, kafka: KafkaSettings | None = None) -> TopicReader:
        readers.append(TopicReader(kafka or kafka_settings, topic))
        return readers[-1]

    yield open_reader
    for r in readers:
        r.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``processes(env, name, command=None)``: a service process logging to a file; killed
    at the end if still running, its last lines printed (shown when the test fails)."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str, command: list[str] | None = None) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"{name}.log", command))
        return started[-1]

    yield start
    for process in started:
        process.close()
        print(f"--- {process.log_path.name} (last lines) ---")
        print("\n".join(process.log_path.read_text(errors="replace").splitlines()[-40:]))
