"""A failed connection attempt closes its socket.

kafka-python 3.0.12 (``kafka/net/inet.py``, ``KafkaNetSocket.connect``) opens a socket per
attempt and, when the connect fails (a node down: ``ECONNREFUSED``), raises without closing
it. The error it raises keeps the frame, and so the socket, alive for as long as the client
keeps that error, and the descriptor is only freed when the garbage collector gets to it, in
whatever code runs then (as a ``ResourceWarning``, which this project's tests turn into
errors). A client that rides out an outage reconnects about once a second, so a long outage
held an open descriptor per attempt.

:func:`close_failed_sockets` wraps the method once, at import of :mod:`messaging`: the same
steps, and the socket closed when the connect does not succeed.
"""

from __future__ import annotations

from typing import Any

from kafka.net.inet import KafkaNetSocket

_PATCHED = "_tagstream_closes_failed_sockets"


def close_failed_sockets() -> None:
    """Make ``KafkaNetSocket.connect`` close its socket when the connect fails (idempotent)."""
    if getattr(KafkaNetSocket.connect, _PATCHED, False):
        return

    async def connect(
        self: KafkaNetSocket,
        net: Any,
        addrinfo: tuple[Any, ...],
        socket_options: Any = (),
        timeout_at: float | None = None,
    ) -> Any:
        family, sock_type, proto, _canonname, sockaddr = addrinfo
        sock = self.socket(family, sock_type, proto)
        try:
            sock.setblocking(False)
            for option in socket_options:
                sock.setsockopt(*option)
            return await self.sock_connect(net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    setattr(connect, _PATCHED, True)
    KafkaNetSocket.connect = connect
