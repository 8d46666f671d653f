"""Helpers for the registry tests: waiting, manifests, a private redis-server."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.ports import free_port
from schemas.manifest import ModelManifest, TrainingDataSummary


def poll_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Whether ``condition`` became true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def make_manifest(**metrics: float) -> ModelManifest:
    return ModelManifest(
        created_at=datetime.now(UTC),
        labels=["earn", "acq", "crude"],
        thresholds=[0.5, 0.4, 0.45],
        encoder_digest="0123456789abcdef",
        hyperparameters={"hidden": 64},
        training_data=TrainingDataSummary(train_documents=100, validation_documents=10),
        metrics=dict(metrics),
    )


class RedisServer:
    """A redis-server of this test's own, on a fixed port so it can be restarted."""

    def __init__(self, workdir: Path, *extra: str, tls: bool = False):
        self.port = free_port()
        self.workdir = workdir
        self.extra = list(extra)
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    *self._port_args(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not poll_until(self._listening, 10):
            self.stop()
            pytest.fail(f"private redis-server did not start: {self._log()}")
        return self

    def _port_args(self) -> list[str]:
        if self.tls:
            return ["--port", "0", "--tls-port", str(self.port)]
        return ["--port", str(self.port)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def _log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
