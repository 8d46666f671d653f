"""A connection attempt that fails closes its socket (:mod:`messaging.sockets`).

kafka-python 3.0.12 alone leaves that socket open until the garbage collector finds it,
whenever that is (a ``ResourceWarning: unclosed <socket...>`` then, in whatever code runs).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from kafka import errors as kafka_errors
from kafka.net.inet import KafkaNetSocket

import messaging  # noqa: F401  (applies the workaround, as every use of the boundary does)


class _Net:
    """The part of kafka-python's network loop a connect waits on: writability."""

    async def wait_write(self, sock: socket.socket, timeout_at: float | None = None) -> None:
        await asyncio.sleep(0.01)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_attempt_closes_its_socket() -> None:
    factory = KafkaNetSocket()
    opened: list[socket.socket] = []
    make = factory.socket

    def recorded(*args: Any) -> socket.socket:
        opened.append(make(*args))
        return opened[-1]

    factory.socket = recorded
    address = socket.getaddrinfo("127.0.0.1", _closed_port(), socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(kafka_errors.KafkaConnectionError, match="ECONNREFUSED"):
        asyncio.run(factory.connect(_Net(), address[0]))
    assert len(opened) == 1
    assert opened[0].fileno() == -1, "the refused attempt's socket is still open"
