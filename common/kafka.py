"""Thin helpers around kafka-python's admin client that several parts of tagstream share."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from common.errors import StackError
from common.settings import KafkaSettings


@contextmanager
def admin_client(settings: KafkaSettings, *, timeout_s: float = 10.0) -> Iterator[KafkaAdminClient]:
    """A connected admin client, closed on exit."""
    try:
        client = KafkaAdminClient(
            **settings.client_config(),
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise StackError(f"Kafka at {settings.bootstrap} is not reachable: {exc}") from exc
    try:
        yield client
    finally:
        client.close()


def wait_until_ready(settings: KafkaSettings, *, timeout_s: float = 60.0) -> None:
    """Block until the cluster answers a metadata request, or raise StackError."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = _wait_for_listener(settings, deadline)
    while time.monotonic() < deadline:
        try:
            with admin_client(settings, timeout_s=5.0) as client:
                client.list_topics()
                return
        except (KafkaError, StackError, OSError) as exc:
            last_error = exc
            time.sleep(0.5)
    raise StackError(
        f"Kafka at {settings.bootstrap} did not answer in {timeout_s:.0f} s: {last_error}"
    )


def _wait_for_listener(settings: KafkaSettings, deadline: float) -> Exception | None:
    """Wait for the first bootstrap address to accept TCP connections.

    Cheaper than a client per attempt, and a client that fails to connect leaks its socket.
    """
    host, _, port = settings.bootstrap.split(",")[0].rpartition(":")
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=1.0):
                return None
        except OSError as exc:
            error = exc
            time.sleep(0.2)
    return error


def ensure_topics(settings: KafkaSettings, partitions: Mapping[str, int]) -> None:
    """Create each topic that does not exist yet with its partition count; wait until usable."""
    with admin_client(settings) as client:
        existing = set(client.list_topics())
        missing = {name: count for name, count in partitions.items() if name not in existing}
        if missing:
            request = {
                name: {"num_partitions": count, "replication_factor": 1}
                for name, count in missing.items()
            }
            # A concurrent creator may win the race; the topic is there either way.
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics(request, wait_for_metadata=True)
        client.wait_for_topics(list(partitions), timeout_ms=30_000)
