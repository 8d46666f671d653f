"""The local stack: a real Apache Kafka broker (KRaft, one node) and a Redis server.

Both run in the background from ``StackSettings.dir`` (default ``<cache>/stack``), each in
its own process session, on loopback ports chosen free on first start and kept afterwards.
``state.json`` in that directory records what runs where; ``up`` on a running stack reports
it instead of starting another, ``down`` stops both and waits until they are gone.

A pid in ``state.json`` may belong to another process by the time it is read (the server
died, the machine rebooted, the pid was reused). So each pid is recorded with its start time
(``/proc/<pid>/stat`` field 22) and command line, and only a process that still matches both
counts as the stack's: anything else is never signalled, and ``down`` reports it as stale.
The program name stands for the command line in the comparison, because Redis rewrites its
arguments into its process title (``redis-server 127.0.0.1:<port>``).

Kafka comes as jars from Maven Central (``deploy/local/kafka/pom.xml``, copied by
``mvn dependency:copy-dependencies`` into ``<cache>/kafka-<version>/libs``) and runs in
combined broker+controller mode with single-node replication factors, so consumer groups
and transactions work.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import redis
from pydantic_settings import BaseSettings

from common.errors import StackError
from common.lifeline import end_with_this_process
from common.logging import get_logger
from common.paths import cache_dir
from common.settings import KafkaSettings, settings_config
from messaging import wait_until_ready
from messaging.admin import admin

KAFKA_VERSION = "4.3.1"
POM = Path(__file__).resolve().parent.parent / "deploy" / "local" / "kafka" / "pom.xml"
LOG4J_CONFIG = POM.with_name("log4j2.properties")
HOST = "127.0.0.1"
SASL_USER = "tagstream"

log = get_logger("tagstream.stack")


class StackSettings(BaseSettings):
    """Where and how the local stack runs (``TAGSTREAM_STACK_*``)."""

    model_config = settings_config("TAGSTREAM_STACK_")

    dir: Path | None = None
    kafka_port: int = 0
    redis_port: int = 0
    kafka_heap: str = "768m"
    start_timeout_s: float = 90.0

    @property
    def stack_dir(self) -> Path:
        return self.dir or cache_dir() / "stack"


class Identity(NamedTuple):
    """What tells a process apart from a later one given the same pid."""

    start_ticks: int
    """``/proc/<pid>/stat`` field 22: clock ticks from boot to the process's start."""
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, pid: int) -> Identity | None:
        """The running process ``pid`` (None when there is none, or only its zombie)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[-1].split()  # fields 3... (the name may hold spaces)
        if fields[0] == "Z":
            return None
        return cls(int(fields[22 - 3]), tuple(raw.decode(errors="replace").split("\0")[:-1]))

    @classmethod
    def started(cls, pid: int, command: list[str]) -> Identity | None:
        """The child ``pid`` just started with ``command`` (as given, not as it may have
        retitled itself since)."""
        now = cls.of(pid)
        return None if now is None else cls(now.start_ticks, tuple(command))

    @property
    def program(self) -> str:
        return Path(self.cmdline[0].split(" ")[0]).name if self.cmdline else ""

    def same_process(self, other: Identity) -> bool:
        return self.start_ticks == other.start_ticks and self.program == other.program


@dataclass(frozen=True)
class StackState:
    """What runs where, as written to ``state.json``."""

    kafka_pid: int
    kafka_port: int
    controller_port: int
    redis_pid: int
    redis_port: int
    sasl_port: int = 0
    """A second Kafka listener that requires SASL/SCRAM-SHA-512 (see :func:`sasl_credentials`)."""
    started: dict[str, Identity] = field(default_factory=dict)
    """Each server's pid (as text) and the process the stack started under it."""

    @property
    def pids(self) -> dict[str, int]:
        return {"kafka": self.kafka_pid, "redis": self.redis_pid}

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` still runs the very process this stack started under it."""
        recorded, now = self.started.get(str(pid)), Identity.of(pid)
        return recorded is not None and now is not None and recorded.same_process(now)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def kafka_sasl_bootstrap(self) -> str:
        return f"{HOST}:{self.sasl_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"


def kafka_libs() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def install() -> None:
    """Fetch the Kafka jars (once) and check that redis-server and java are on the PATH."""
    for program in ("java", "redis-server"):
        if shutil.which(program) is None:
            raise StackError(f"{program} is not installed; run `make setup`")
    libs = kafka_libs()
    if (libs / ".complete").is_file():
        return
    if shutil.which("mvn") is None:
        raise StackError("mvn is not installed; run `make setup`")
    shutil.rmtree(libs, ignore_errors=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"fetching the Kafka jars failed:\n{result.stdout}{result.stderr}")
    (libs / ".complete").write_text(KAFKA_VERSION + "\n")


class LocalStack:
    """Start, inspect and stop the local Kafka + Redis pair living in one directory."""

    def __init__(
        self, settings: StackSettings | None = None, *, end_with_this_process: bool = False
    ) -> None:
        """``end_with_this_process``: the servers it starts get SIGTERM when this process
        dies, however it dies (``common.lifeline``): for a stack that lives only as long as
        its user (the demo), not for ``tagstream stack up``."""
        self.settings = settings or StackSettings()
        self.end_with_this_process = end_with_this_process
        self._spawned: dict[int, Identity] = {}
        self.dir = self.settings.stack_dir
        self.state_file = self.dir / "state.json"

    def status(self) -> StackState | None:
        """The running stack, or None when neither server is up."""
        state = self._read_state()
        if state is None:
            return None
        if any(state.owns(pid) for pid in state.pids.values()):
            return state
        return None

    def up(self) -> tuple[StackState, bool]:
        """Start both servers unless they run; returns the state and whether it started them."""
        running = self.status()
        if running is not None:
            if all(running.owns(pid) for pid in running.pids.values()):
                return running, False
            self.down()
        install()
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._start()
        try:
            self.wait_ready(state)
            self._create_sasl_user(state)
        except StackError:
            self.down()
            raise
        return state, True

    def sasl_credentials(self) -> tuple[str, str]:
        """User and password of the SASL listener (made on first use, kept in the stack dir)."""
        path = self.dir / "sasl.json"
        if not path.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(".tmp")
            scratch.touch(mode=0o600)
            scratch.write_text(
                json.dumps({"username": SASL_USER, "password": secrets.token_urlsafe(18)})
            )
            scratch.replace(path)
        saved = json.loads(path.read_text())
        return saved["username"], saved["password"]

    def _create_sasl_user(self, state: StackState) -> None:
        user, password = self.sasl_credentials()
        with admin(KafkaSettings(bootstrap=state.kafka_bootstrap)) as client:
            client.upsert_scram_user(user, password)

    def down(self) -> bool:
        """Stop both servers and wait until they are gone; returns whether any ran."""
        state = self._read_state()
        if state is None:
            return False
        # state.json stays: the next ``up`` reuses its ports when they are still free.
        return any([_stop(state, name, pid) for name, pid in state.pids.items()])

    def stop_kafka(self) -> None:
        """Stop only the broker (for fault tests); ``start_kafka`` brings it back."""
        state = self._require_state()
        _stop(state, "kafka", state.kafka_pid)

    def start_kafka(self) -> StackState:
        """Restart the broker on its old ports after ``stop_kafka``."""
        state = self._require_state()
        kafka_pid = self._spawn_kafka(state.kafka_port, state.controller_port, state.sasl_port)
        state = StackState(**{**asdict(state), "kafka_pid": kafka_pid})
        self._write_state(state)
        wait_until_ready(
            KafkaSettings(bootstrap=state.kafka_bootstrap), timeout_s=self.settings.start_timeout_s
        )
        return state

    def stop_redis(self) -> None:
        """Stop only Redis (for fault tests); ``start_redis`` brings it back."""
        state = self._require_state()
        _stop(state, "redis", state.redis_pid)

    def start_redis(self) -> StackState:
        """Restart Redis on its old port after ``stop_redis``; its data comes back from disk."""
        state = self._require_state()
        state = StackState(**{**asdict(state), "redis_pid": self._spawn_redis(state.redis_port)})
        self._write_state(state)
        _wait_for_redis(state.redis_url, self.settings.start_timeout_s)
        return state

    def wait_ready(self, state: StackState) -> None:
        """Block until Kafka answers a metadata request and Redis a PING."""
        timeout = self.settings.start_timeout_s
        _wait_for_redis(state.redis_url, timeout)
        try:
            wait_until_ready(KafkaSettings(bootstrap=state.kafka_bootstrap), timeout_s=timeout)
        except StackError as exc:
            raise StackError(
                f"{exc}\n--- last lines of {self.dir / 'kafka' / 'server.log'}:\n"
                f"{_tail(self.dir / 'kafka' / 'server.log')}"
            ) from None

    def _start(self) -> StackState:
        state = self._read_state()
        previous: dict[str, int] = asdict(state) if state else {}
        taken: set[int] = set()
        kafka_port = self.settings.kafka_port or _pick_port(previous.get("kafka_port"), taken)
        controller_port = _pick_port(previous.get("controller_port"), taken)
        sasl_port = _pick_port(previous.get("sasl_port"), taken)
        redis_port = self.settings.redis_port or _pick_port(previous.get("redis_port"), taken)
        redis_pid = self._spawn_redis(redis_port)
        kafka_pid = self._spawn_kafka(kafka_port, controller_port, sasl_port)
        state = StackState(kafka_pid, kafka_port, controller_port, redis_pid, redis_port, sasl_port)
        self._write_state(state)
        return state

    def _spawn_kafka(self, port: int, controller_port: int, sasl_port: int) -> int:
        kafka_dir = self.dir / "kafka"
        kafka_dir.mkdir(parents=True, exist_ok=True)
        properties = kafka_dir / "server.properties"
        properties.write_text(
            _server_properties(kafka_dir / "data", port, controller_port, sasl_port)
        )
        java = [
            "java",
            f"-Xmx{self.settings.kafka_heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            f"-Dkafka.logs.dir={kafka_dir}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            f"{kafka_libs()}/*",
        ]
        if not (kafka_dir / "data" / "meta.properties").is_file():
            _run_checked(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(properties),
                ],
                "formatting Kafka storage",
            )
        return self._spawn([*java, "kafka.Kafka", str(properties)], kafka_dir / "stdout.log")

    def _spawn_redis(self, port: int) -> int:
        redis_dir = self.dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        return self._spawn(
            [
                "redis-server",
                "--bind",
                HOST,
                "--port",
                str(port),
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                str(redis_dir / "redis.log"),
            ],
            redis_dir / "stdout.log",
        )

    def _spawn(self, command: list[str], log: Path) -> int:
        tie = end_with_this_process() if self.end_with_this_process else None
        pid = _spawn(command, log, tie)
        identity = Identity.started(pid, command)
        if identity is not None:
            self._spawned[pid] = identity
        return pid

    def _read_state(self) -> StackState | None:
        try:
            raw = json.loads(self.state_file.read_text())
            started = raw.pop("started", {})
            return StackState(
                **raw,
                started={pid: Identity(int(t), tuple(c)) for pid, (t, c) in started.items()},
            )
        except (OSError, ValueError, TypeError):
            return None

    def _require_state(self) -> StackState:
        state = self._read_state()
        if state is None:
            raise StackError(f"no stack in {self.dir}; run `tagstream stack up`")
        return state

    def _write_state(self, state: StackState) -> None:
        """Write ``state`` with the identity of each pid this object started."""
        started = {}
        for pid in map(str, state.pids.values()):
            identity = state.started.get(pid) or self._spawned.get(int(pid))
            if identity is not None:
                started[pid] = identity
        state = StackState(**{**asdict(state), "started": started})
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(asdict(state), indent=2))
        scratch.replace(self.state_file)


def _server_properties(data_dir: Path, port: int, controller_port: int, sasl_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port},"
        f"SASL_PLAINTEXT://{HOST}:{sasl_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port},SASL_PLAINTEXT://{HOST}:{sasl_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "log.retention.hours": "24",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-``, which the storage tool would read as an option (one id
    in 64 did; Kafka's own ``Uuid.randomUuid`` skips those too).
    """
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


_children: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started, kept so that stopping them also collects their status."""


def _spawn(command: list[str], log: Path, preexec: Callable[[], None] | None) -> int:
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - thread-safe: see common.lifeline
        )
    _children[process.pid] = process
    return process.pid


def _run_checked(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"{what} failed:\n{result.stdout}{result.stderr}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def _stop(state: StackState, name: str, pid: int) -> bool:
    """Stop ``name``'s server if ``pid`` is still it; True if it was running."""
    if state.owns(pid):
        return _terminate(pid)
    identity = Identity.of(pid)
    if identity is not None:
        log.warning(
            "stale stack entry not signalled",
            server=name,
            pid=pid,
            recorded=state.started.get(str(pid)),
            now=" ".join(identity.cmdline),
        )
    _children.pop(pid, None)
    return False


def _terminate(pid: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group, SIGKILL it after ``timeout_s``; True if it was running."""
    if not _alive(pid):
        _children.pop(pid, None)
        return False
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, timeout_s)
    return True


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has exited (and collect it when it is our own child)."""
    child = _children.get(pid)
    if child is not None:
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        del _children[pid]
        return True
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _pick_port(previous: int | None, taken: set[int]) -> int:
    """The port used last time if it is still free, else a fresh free one; noted in ``taken``."""
    port = previous if previous and previous not in taken and _port_free(previous) else 0
    while not port or port in taken:
        port = _free_port()
    taken.add(port)
    return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_redis(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
    finally:
        client.close()
    raise StackError(f"Redis at {url} did not answer PING in {timeout_s:.0f} s")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
