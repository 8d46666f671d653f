"""Fixtures shared by the whole suite.

The session starts the project's own local stack (real Apache Kafka and Redis) in a
temporary directory, or uses ``TAGSTREAM_KAFKA_BOOTSTRAP`` and ``TAGSTREAM_REDIS_URL`` when
both are set. A server that cannot be started fails the run with the reason: integration
tests never skip. Factory fixtures give each test its own topics, consumer group and a
freshly flushed Redis database.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from common.errors import StackError
from common.settings import KafkaSettings, RedisSettings
from messaging import ensure_topics
from tagstream.stack import LocalStack, StackSettings
from tests.worker.harness import in_process, processes, reader, topics, toy_model

__all__ = ["in_process", "processes", "reader", "topics", "toy_model"]  # suite-wide fixtures


@dataclass(frozen=True)
class Stack:
    """Where the servers for this test session listen."""

    kafka_bootstrap: str
    redis_url: str
    local: LocalStack | None


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Real Kafka + Redis for the session: given by the environment, or started here."""
    bootstrap = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("TAGSTREAM_REDIS_URL")
    if bootstrap and redis_url:
        yield Stack(bootstrap, redis_url, None)
        return
    local = LocalStack(StackSettings(dir=tmp_path_factory.mktemp("stack")))
    try:
        state, _ = local.up()
    except StackError as exc:
        pytest.fail(f"the local stack (Apache Kafka + Redis) could not start: {exc}", pytrace=False)
    try:
        yield Stack(state.kafka_bootstrap, state.redis_url, local)
    finally:
        local.down(discard=True)  # the session's data goes with its tmp dir


@pytest.fixture
def kafka_settings(stack: Stack) -> KafkaSettings:
    return KafkaSettings(bootstrap=stack.kafka_bootstrap)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:40]


@pytest.fixture
def topic_factory(
    kafka_settings: KafkaSettings, request: pytest.FixtureRequest
) -> Callable[..., str]:
    """Create a new topic for this test: ``topic_factory(partitions=1, suffix="")``."""

    def create(partitions: int = 1, suffix: str = "") -> str:
        name = f"{_slug(request.node.name)}-{suffix}-{uuid.uuid4().hex[:8]}".replace("--", "-")
        ensure_topics(kafka_settings, {name: partitions})
        return name

    return create


@pytest.fixture
def group_id(request: pytest.FixtureRequest) -> str:
    """A consumer group nobody else uses."""
    return f"g-{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"


_databases = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(stack: Stack) -> str:
    """A URL to a Redis database flushed for this test (databases 1-15 in turn)."""
    url = re.sub(r"/\d+$", f"/{next(_databases)}", stack.redis_url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def redis_settings(redis_url: str) -> RedisSettings:
    return RedisSettings(url=redis_url, namespace=f"t{uuid.uuid4().hex[:6]}")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def service_env(stack: Stack, redis_settings: RedisSettings, tmp_path: Path) -> dict[str, str]:
    """Environment for a tagstream subprocess talking to this test's Kafka and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env |= {
        "TAGSTREAM_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TAGSTREAM_REDIS_URL": redis_settings.url,
        "TAGSTREAM_REDIS_NAMESPACE": redis_settings.namespace,
        "TAGSTREAM_CACHE": os.environ.get("TAGSTREAM_CACHE", str(Path.home() / ".cache/tagstream")),
        "TAGSTREAM_REGISTRY_CACHE_DIR": str(tmp_path / "model-cache"),
        "PYTHONUNBUFFERED": "1",
    }
    return env


def pytest_unconfigure(config: pytest.Config) -> None:
    """Name every child process still running when the suite ends: a test or fixture that
    leaves one behind shows up here (and as a ``ResourceWarning`` when its ``Popen`` is
    collected), with its command line, instead of as a bare pid."""
    mine = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            state, parent = text[text.rindex(")") + 2 :].split()[:2]
            if parent != mine or state == "Z":
                continue
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        print(f"\nchild process still running at the end of the session: {stat.parent.name}")
        print(f"    {command[:300]}")
    for process in [o for o in gc.get_objects() if issubclass(type(o), subprocess.Popen)]:
        if process.returncode is None:
            proc = Path(f"/proc/{process.pid}/stat")
            alive = proc.read_text().split(") ")[-1][:1] if proc.exists() else "gone"
            print(f"\nPopen not waited for at the end of the session: pid {process.pid} ({alive})")
            print(f"    {str(process.args)[:300]}")
