"""Servers get ports below the ephemeral range, where no outgoing connection takes one."""

from __future__ import annotations

import socket

from common.ports import LOWEST, ephemeral_start, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_listened_on() -> None:
    ports = {free_port() for _ in range(20)}
    assert all(LOWEST <= port < ephemeral_start() for port in ports), sorted(ports)
    with socket.create_server(("127.0.0.1", ports.pop())):
        pass
