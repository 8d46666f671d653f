"""A TCP relay a test can cut, like a network partition that heals.

Each Kafka node of the cluster fixture has a RELAY listener that advertises a port of its own
(``KafkaNode.relay_port``); a :class:`Relay` listens there and forwards to the node's real
RELAY listener. A client bootstrapped on the relay ports learns only relay addresses from
the metadata, so all of its traffic, to every broker, passes through the relays.

:meth:`Relay.cut` stops moving bytes both ways and holds new connections unanswered: nothing
is refused or reset, requests and heartbeats simply get no answer, as when a cable is pulled.
:meth:`Relay.heal` lets the buffered bytes through again, as TCP does when the path returns.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 65536


class Relay:
    """Forwards ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port`` until closed."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, name=f"relay-{listen_port}", daemon=True).start()

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self._open.set()
        with self._lock:
            for sock in [self._server, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._track(client)
        self._wait_open()
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        self._track(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _wait_open(self) -> None:
        while not self._open.wait(0.2):
            if self._closed.is_set():
                return

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes one way; while cut, read nothing (the sender's buffers fill up)."""
        try:
            while not self._closed.is_set():
                self._wait_open()
                source.settimeout(0.2)
                try:
                    data = source.recv(CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    break
                self._wait_open()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
