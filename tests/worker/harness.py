"""What the worker and reliability tests share: the toy labels, fast group settings,
synthetic articles, worker settings as environment, in-process workers, and the fixtures
built on them (registered for the whole suite in tests/conftest.py)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import KafkaSettings, RedisSettings
from model.settings import RegistrySettings
from model.toy import synthetic_articles, toy_artifact
from schemas import Article
from tests.worker.kafka_tools import TopicReader, WorkerProcess
from worker.app import Worker
from worker.settings import WorkerSettings

LABELS = ("earn", "acq", "crude")
FAST = {
    "session_timeout_ms": "6000",
    "heartbeat_interval_ms": "1000",
    "commit_interval_ms": "200",
    "max_wait_ms": "20",
    "revoke_timeout_s": "5",
    "join_timeout_s": "15",
    "metrics_port": "0",
}


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


def get(port: int | None, path: str) -> tuple[int, str]:
    """Status and body of a GET on a service's health server; status 0 while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError as error:
        return 0, str(error.reason)


def articles(count: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    made = synthetic_articles(LABELS, count, seed=start, prefix="a")
    return [
        (
            f"art-{start + i}".encode(),
            Article(id=f"art-{start + i}", title=a.title, body=a.body).model_dump_json().encode(),
        )
        for i, a in enumerate(made)
    ]


def expected_ids(count: int, start: int = 0) -> Counter[str]:
    return Counter(f"art-{i}" for i in range(start, start + count))


def env_for(
    service_env: dict[str, str], topics: dict[str, str], group: str, **settings: str
) -> dict[str, str]:
    values = (
        FAST
        | {
            "input_topic": topics["input"],
            "output_topic": topics["output"],
            "dlq_topic": topics["dlq"],
            "group_id": group,
        }
        | settings
    )
    return service_env | {f"TAGSTREAM_WORKER_{k.upper()}": v for k, v in values.items()}


class InProcess:
    """A Worker running in a thread of this test process."""

    def __init__(
        self,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        redis: RedisSettings,
        registry: RegistrySettings,
    ) -> None:
        self.worker = Worker(settings, kafka, redis, registry)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def metric(self, name: str, **labels: str) -> float:
        registry = self.worker.metrics.registry
        return registry.get_sample_value(f"tagstream_worker_{name}", labels) or 0.0

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def in_process(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, group_id: str, tmp_path: Path
) -> Iterator[Callable[..., InProcess]]:
    """Start in-process workers on this test's group; each is stopped at the end."""
    started: list[InProcess] = []

    def start(
        topics: dict[str, str], kafka: KafkaSettings | None = None, **settings: Any
    ) -> InProcess:
        values = (
            FAST
            | {
                "input_topic": topics["input"],
                "output_topic": topics["output"],
                "dlq_topic": topics["dlq"],
                "group_id": group_id,
                "worker_id": f"w-{group_id}",
            }
            | settings
        )
        registry = RegistrySettings(cache_dir=tmp_path / "model-cache")
        started.append(
            InProcess(WorkerSettings(**values), kafka or kafka_settings, redis_settings, registry)
        )
        return started[-1]

    yield start
    for worker in started:
        if worker.thread.is_alive():
            worker.stop()


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
    at the end if still running; what it said besides its batches, and its last lines, are
    printed (shown when the test fails)."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str, command: list[str] | None = None) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"{name}.log", command))
        return started[-1]

    yield start
    for process in started:
        process.close()
        lines = process.log_path.read_text(errors="replace").splitlines()
        said = [line for line in lines if '"event": "batch"' not in line]
        print(f"--- {process.log_path.name}: {len(lines)} lines, the last 30 not batches ---")
        print("\n".join(said[-30:]))  # shown when the test fails
        print(f"--- {process.log_path.name}: the last 5 lines ---")
        print("\n".join(lines[-5:]))
