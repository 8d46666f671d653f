"""Ports for servers this project starts on loopback, chosen outside the ephemeral range.

A port the kernel hands out for ``bind(port 0)`` comes from the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default), the same range every
outgoing connection takes its local port from. A server that must keep its port across a
restart (a Kafka node started again, a test relay opened again) then finds it taken by some
client's connection now and then (``EADDRINUSE``; seen once in a cluster scenario's relay).
So the ports here are drawn at random from below that range, and checked free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20_000
"""Below this are the ports well-known services register; above it up to the ephemeral
range nothing on a Linux host hands out ports by itself."""
ATTEMPTS = 200
PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nobody holds now, outside the ephemeral range when there is
    room below it (else whatever the kernel gives for port 0)."""
    top = ephemeral_start()
    if top - LOWEST >= 1_000:
        for _ in range(ATTEMPTS):
            port = random.randrange(LOWEST, top)  # noqa: S311 - a port, not a secret
            if port_free(host, port):
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
