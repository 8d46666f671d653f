"""Inference in a child process, so the model's forward passes never wait for the GIL.

Torch releases the GIL inside each operator and takes it back after; in the worker four
Python threads (the consumer, the assembler, the producer's sender, delivery) want it too,
so every forward pass waits for them at each hand-back and a batch took about twice as long
as alone (docs/benchmarks.md, "Worker overhead"). With ``TAGSTREAM_WORKER_INFERENCE_PROCESS``
on, the networks live in one child process (``python -m worker.offload``, :func:`serve`) and
the worker keeps only what is cheap: the encoder, the labels and their thresholds
(:class:`OffloadedModel`).

The protocol, pickled over a socket pair (``multiprocessing.connection.Connection``), one
request at a time (a lock):

``("load", version, data, sha256)``   verify the artifact, build its network, warm it up
``("score", version, ids, lengths)``  scores for the sequences ``ids`` (int32, concatenated)
``("stop",)``                         exit

and the child answers ``("ok", value)``, ``("error", text)`` (the request failed, the child
goes on: an article with an out-of-range token, a model that raises) or ``("unknown",
version)`` (a version it does not hold: loaded, then asked again). The child keeps the
``MAX_LOADED`` versions used last, so the serving model, a swap candidate and a shadow fit.

Failures of the child itself are the parent's to handle. A new child says it is ready once
it has started (within ``START_TIMEOUT_S``), and every request has a deadline
(``inference_timeout_s``; loads ``LOAD_TIMEOUT_S``); a child that died, or did not answer in
time, is killed and the request raises :class:`InferenceProcessError`, which the scoring path
treats like any failed forward pass (``worker.inference``: the batch is halved until the
article that fails alone is found, or the whole batch is rewound when the model fails on its
warm-up input too). The next request starts a new child, at most ``MAX_RESTARTS`` times in
``RESTART_WINDOW_S``; past that, requests fail at once until the window has passed, so a child
that dies on start does not turn into a busy loop of restarts.

The child ignores SIGINT and SIGTERM: a terminal's Ctrl-C or a signal to the process group
must not take the model away while the worker drains its in-flight batches. It exits when told
to, and when the pipe closes (the worker exited or was killed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

from common.logging import configure, get_logger
from model.artifact import Artifact
from model.errors import ModelError
from model.inference import (
    AT_LEAST_ONE,
    RUNTIMES,
    Classifier,
    decide_label_rows,
    decide_labels,
)
from worker.errors import WorkerError

log = get_logger("worker.offload")

MAX_LOADED = 4
LOAD_TIMEOUT_S = 300.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class InferenceProcessError(WorkerError):
    """The inference process died, did not answer in time, or cannot be started now."""


class InferenceProcess:
    """The worker's handle on its inference child: started on first use, restarted on need."""

    def __init__(
        self,
        *,
        device: str,
        threads: int | None,
        timeout_s: float,
        runtime: str = "auto",
        log_level: str = "INFO",
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._device = device
        self._runtime = runtime
        self._threads = threads
        self._timeout_s = timeout_s
        self._log_level = log_level
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._starts: deque[float] = deque()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's pid while one runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def load(self, model: OffloadedModel) -> None:
        """Have the child hold ``model`` (built and warmed up), whatever it held before."""
        with self._lock:
            self._load(model)

    def score(self, model: OffloadedModel, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores ``[n, labels]`` for ``token_ids`` from the child, loading ``model`` there
        first when it does not hold it (a new child, or one that dropped it)."""
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int32)
        flat = np.fromiter((i for ids in token_ids for i in ids), dtype=np.int32)
        request = ("score", model.version, flat, lengths)
        with self._lock:
            kind, value = self._call(request, self._timeout_s)
            if kind == "unknown":
                self._load(model)
                kind, value = self._call(request, self._timeout_s)
        if kind != "ok":
            raise ModelError(f"inference process: {value}")
        return np.asarray(value)

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the child to exit; kill it when it has not within ``timeout_s``."""
        with self._lock:
            self._closed = True
            conn, process = self._conn, self._process
            self._conn = self._process = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            conn.close()
        if process is not None:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("inference process did not stop; killing it", pid=process.pid)
                process.kill()
                process.wait(timeout_s)

    # -- under the lock ---------------------------------------------------------------------
    def _load(self, model: OffloadedModel) -> None:
        request = ("load", model.version, model.data, model.sha256)
        kind, value = self._call(request, LOAD_TIMEOUT_S)
        if kind != "ok":
            raise ModelError(f"inference process could not load model {model.version}: {value}")

    def _call(self, request: tuple[Any, ...], timeout_s: float) -> tuple[str, Any]:
        conn = self._ensure_started()
        try:
            conn.send(request)
            if not conn.poll(timeout_s):
                self._discard(f"no answer within {timeout_s:g} s")
                raise InferenceProcessError(
                    f"the inference process did not answer {request[0]!r} within {timeout_s:g} s"
                )
            kind, value = conn.recv()
        except (OSError, EOFError) as exc:
            code = self._discard(f"{type(exc).__name__}: {exc}")
            raise InferenceProcessError(
                f"the inference process ended (exit code {code}) during {request[0]!r}"
            ) from exc
        return str(kind), value

    def _ensure_started(self) -> Connection:
        if self._closed:
            raise InferenceProcessError("the inference process was closed")
        if self._conn is not None and self._process is not None and self._process.poll() is None:
            return self._conn
        if self._process is not None:
            self._discard("it was found dead")
        now = time.monotonic()
        while self._starts and now - self._starts[0] > RESTART_WINDOW_S:
            self._starts.popleft()
        if len(self._starts) > MAX_RESTARTS:
            raise InferenceProcessError(
                f"the inference process was started {len(self._starts)} times in the last "
                f"{RESTART_WINDOW_S:g} s; not again before {RESTART_WINDOW_S:g} s have passed"
            )
        restart = bool(self._starts)
        self._starts.append(now)
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "worker.offload", "--fd", str(theirs.fileno())]
        command += ["--device", self._device, "--runtime", self._runtime]
        command += ["--log-level", self._log_level]
        if self._threads is not None:
            command += ["--threads", str(self._threads)]
        try:
            process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            ours.close()
            raise InferenceProcessError(f"the inference process could not start: {exc}") from exc
        finally:
            theirs.close()
        parent = Connection(ours.detach())
        self._conn, self._process = parent, process
        self._await_ready(parent)
        log.info("inference process started", pid=process.pid, restart=restart)
        if restart and self._on_restart is not None:
            self._on_restart()
        return parent

    def _await_ready(self, conn: Connection) -> None:
        """Wait for the new child's first word (it has started), within
        ``START_TIMEOUT_S``."""
        try:
            if not conn.poll(START_TIMEOUT_S):
                self._discard(f"not ready within {START_TIMEOUT_S:g} s")
                raise InferenceProcessError(
                    f"the inference process was not ready within {START_TIMEOUT_S:g} s"
                )
            conn.recv()
        except (OSError, EOFError) as exc:
            code = self._discard(f"{type(exc).__name__}: {exc}")
            raise InferenceProcessError(
                f"the inference process ended (exit code {code}) while starting"
            ) from exc

    def _discard(self, reason: str) -> int | None:
        """Kill and forget the child; its exit code (None if it had to be killed)."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        code = process.poll()
        if code is None:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
        log.warning("inference process discarded", pid=process.pid, reason=reason, exit_code=code)
        return code


class OffloadedModel:
    """A model whose forward passes run in the inference process; everything else here.

    It provides what :class:`worker.inference.Model` asks: encoding and the label decision
    from the artifact (the same code as :class:`model.inference.Classifier`), scores from the
    child. ``data`` (the verified artifact bytes) is kept to load the child again after a
    restart.
    """

    def __init__(self, data: bytes, sha256: str | None, version: int, process: InferenceProcess):
        artifact = Artifact.from_bytes(data, sha256)
        self.data, self.sha256, self.version = data, sha256, version
        self._process = process
        self.encoder = artifact.encoder
        self.labels: list[str] = list(artifact.manifest.labels)
        self._thresholds = np.asarray(artifact.manifest.thresholds, dtype=np.float32)
        self._at_least_one = bool(artifact.manifest.hyperparameters.get(AT_LEAST_ONE, False))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoder.encode(texts)

    def scores(self, token_ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        return self._process.score(self, token_ids)

    def decide(self, scores_row: npt.ArrayLike) -> list[tuple[str, float]]:
        return decide_labels(scores_row, self.labels, self._thresholds, self._at_least_one)

    def decide_rows(self, scores: npt.ArrayLike) -> list[list[tuple[str, float]]]:
        return decide_label_rows(scores, self.labels, self._thresholds, self._at_least_one)

    def warm_up(self) -> None:
        """Load the model in the child (which warms it up there)."""
        self._process.load(self)


# -- the child ---------------------------------------------------------------------------------
def serve(
    conn: Connection, device: str, threads: int | None, log_level: str, runtime: str = "auto"
) -> None:
    """The inference process: answer requests until told to stop or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure(log_level)
    models: OrderedDict[int, Classifier] = OrderedDict()
    try:
        conn.send(("ready", os.getpid()))
    except (OSError, EOFError):
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone
        kind = request[0]
        if kind == "stop":
            return
        try:
            reply = _answer(request, models, (device, threads, runtime), Classifier)
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return


def _answer(
    request: tuple[Any, ...],
    models: OrderedDict[int, Any],
    where: tuple[str, int | None, str],
    classifier: Any,
) -> tuple[str, Any]:
    kind, version = request[0], request[1]
    if kind == "load":
        _, _, data, sha256 = request
        device, threads, runtime = where
        model = classifier.from_artifact(
            Artifact.from_bytes(data, sha256),
            version=version,
            device=device,
            threads=threads,
            runtime=runtime,
        )
        model.warm_up()
        models[version] = model
        models.move_to_end(version)
        while len(models) > MAX_LOADED:
            models.popitem(last=False)
        return "ok", None
    if kind == "score":
        model = models.get(version)
        if model is None:
            return "unknown", version
        models.move_to_end(version)
        _, _, flat, lengths = request
        ends = np.cumsum(lengths)
        token_ids = [flat[end - n : end].tolist() for n, end in zip(lengths, ends, strict=True)]
        return "ok", np.asarray(model.scores(token_ids), dtype=np.float32)
    raise ValueError(f"unknown request {kind!r}")


def main(argv: list[str] | None = None) -> None:
    """``python -m worker.offload --fd N``: serve on the socket inherited as fd N."""
    parser = argparse.ArgumentParser(prog="python -m worker.offload")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    os.set_inheritable(args.fd, False)
    serve(Connection(args.fd), args.device, args.threads, args.log_level, args.runtime)


if __name__ == "__main__":
    main()
