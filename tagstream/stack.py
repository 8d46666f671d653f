"""The local stack: a real Apache Kafka (KRaft, one node or a cluster of three) and Redis.

All run in the background from ``StackSettings.dir`` (default ``<cache>/stack``), each in
its own process session, on loopback ports chosen free on first start and kept afterwards.
``state.json`` in that directory records what runs where; ``up`` on a running stack reports
it instead of starting another, ``down`` stops them all and waits until they are gone.

A pid in ``state.json`` may belong to another process by the time it is read (the server
died, the machine rebooted, the pid was reused). So each pid is recorded with its start time
(``/proc/<pid>/stat`` field 22) and command line, and only a process that still matches both
counts as the stack's: anything else is never signalled, and ``down`` reports it as stale.
The program name stands for the command line in the comparison, because Redis rewrites its
arguments into its process title (``redis-server 127.0.0.1:<port>``).

Kafka comes as jars from Maven Central (``deploy/local/kafka/pom.xml``, copied by
``mvn dependency:copy-dependencies`` into ``<cache>/kafka-<version>/libs``) and runs in
combined broker+controller mode. One node (the default) has single-node replication
factors, so consumer groups and transactions work; ``brokers=3`` (``stack up --brokers 3``)
starts three nodes, each broker and controller, in one KRaft quorum of three voters, with
replication factor 3 and ``min.insync.replicas=2`` for new topics, the offsets topic and the
transaction log. Node 1 lives in ``kafka/``, node *n* in ``kafka-<n>/``; each can be stopped,
killed and started on its own (:meth:`LocalStack.stop_node`, ``kill_node``, ``start_node``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import redis
from pydantic_settings import BaseSettings

from common.errors import StackError
from common.lifeline import end_with_this_process
from common.logging import get_logger
from common.paths import cache_dir
from common.ports import free_port, port_free
from common.settings import KafkaSettings, settings_config
from messaging import MessagingError, wait_until_ready
from messaging.admin import admin

log = get_logger("tagstream.stack")

KAFKA_VERSION = "4.3.1"
POM = Path(__file__).resolve().parent.parent / "deploy" / "local" / "kafka" / "pom.xml"
LOG4J_CONFIG = POM.with_name("log4j2.properties")
HOST = "127.0.0.1"
SASL_USER = "tagstream"
TERM_GRACE_S = 30.0
"""How long a server has to exit after SIGTERM before it is killed."""


class StackSettings(BaseSettings):
    """Where and how the local stack runs (``TAGSTREAM_STACK_*``)."""

    model_config = settings_config("TAGSTREAM_STACK_")

    dir: Path | None = None
    kafka_port: int = 0
    redis_port: int = 0
    kafka_heap: str = "768m"
    start_timeout_s: float = 90.0
    brokers: Literal[1, 3] = 1
    """Kafka nodes: one, or a quorum of three (replication factor 3, min ISR 2)."""
    relays: bool = False
    """Give each node a RELAY listener advertised on a port of its own (``KafkaNode.relay_port``)
    where a test runs a TCP relay it can cut: clients bootstrapped there reach every broker
    through the relays only."""

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
class KafkaNode:
    """One Kafka node (broker and controller) and its ports."""

    node_id: int
    pid: int
    port: int
    controller_port: int
    sasl_port: int = 0
    relay_listener_port: int = 0
    """Where the node listens for RELAY clients (0: no such listener)."""
    relay_port: int = 0
    """Where the node tells RELAY clients to connect: a relay to ``relay_listener_port``."""

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class StackState:
    """What runs where, as written to ``state.json``.

    The flat ``kafka_*`` fields are node 1 (as a one-node stack has always written them);
    ``peers`` are nodes 2 and 3 of a cluster.
    """

    kafka_pid: int
    kafka_port: int
    controller_port: int
    redis_pid: int
    redis_port: int
    sasl_port: int = 0
    """A second Kafka listener that requires SASL/SCRAM-SHA-512 (see :func:`sasl_credentials`)."""
    peers: tuple[KafkaNode, ...] = ()
    relay_listener_port: int = 0
    relay_port: int = 0
    started: dict[str, Identity] = field(default_factory=dict)
    """Each server's pid (as text) and the process the stack started under it."""

    @property
    def pids(self) -> dict[str, int]:
        """Each server's pid by name: ``kafka`` (node 1), ``kafka-2``, ``kafka-3``, ``redis``."""
        names = {
            node.node_id: "kafka" if node.node_id == 1 else f"kafka-{node.node_id}"
            for node in self.nodes
        }
        return {names[node.node_id]: node.pid for node in self.nodes} | {"redis": self.redis_pid}

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` still runs the very process this stack started under it."""
        recorded, now = self.started.get(str(pid)), Identity.of(pid)
        return recorded is not None and now is not None and recorded.same_process(now)

    @property
    def nodes(self) -> tuple[KafkaNode, ...]:
        first = KafkaNode(
            1,
            self.kafka_pid,
            self.kafka_port,
            self.controller_port,
            self.sasl_port,
            self.relay_listener_port,
            self.relay_port,
        )
        return (first, *self.peers)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise StackError(f"no Kafka node {node_id}; this stack has {len(self.nodes)}")

    @property
    def kafka_pids(self) -> tuple[int, ...]:
        return tuple(node.pid for node in self.nodes)

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def kafka_sasl_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{node.sasl_port}" for node in self.nodes)

    @property
    def kafka_relay_bootstrap(self) -> str:
        """The RELAY listeners, reached through the relays (empty without ``relays``)."""
        return ",".join(f"{HOST}:{node.relay_port}" for node in self.nodes if node.relay_port)

    def with_node(self, node: KafkaNode) -> StackState:
        """This state with ``node`` (same id) replacing the one recorded."""
        if node.node_id == 1:
            return replace(self, kafka_pid=node.pid)
        peers = tuple(node if p.node_id == node.node_id else p for p in self.peers)
        return replace(self, peers=peers)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> StackState:
        peers = tuple(KafkaNode(**peer) for peer in saved.pop("peers", ()))
        started = saved.pop("started", {})
        return cls(
            **saved,
            peers=peers,
            started={pid: Identity(int(t), tuple(c)) for pid, (t, c) in started.items()},
        )

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

    def down(self, *, discard: bool = False) -> bool:
        """Stop both servers and wait until they are gone; returns whether any ran.

        ``discard``: the data is thrown away after this (a test session's stack), so the
        servers are killed at once instead of closing their logs cleanly, which for a broker
        holding a test suite's thousands of partitions takes longer than its 30 s grace.
        """
        state = self._read_state()
        if state is None:
            _reap()
            return False
        # state.json stays: the next ``up`` reuses its ports when they are still free.
        grace = 0.0 if discard else TERM_GRACE_S
        stopped = any([_stop(state, name, pid, grace) for name, pid in state.pids.items()])
        _reap()
        return stopped

    def stop_kafka(self) -> None:
        """Stop only the broker (for fault tests); ``start_kafka`` brings it back."""
        self.stop_node(1)

    def start_kafka(self) -> StackState:
        """Restart the broker on its old ports after ``stop_kafka``."""
        return self.start_node(1)

    def stop_node(self, node_id: int) -> None:
        """Stop one Kafka node cleanly (SIGTERM: it hands over its leaderships first)."""
        state = self._require_state()
        _stop(state, f"kafka node {node_id}", state.node(node_id).pid)

    def kill_node(self, node_id: int) -> None:
        """``kill -9`` one Kafka node: no shutdown, no handover."""
        state = self._require_state()
        pid = state.node(node_id).pid
        if state.owns(pid):
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 30.0)

    def start_node(self, node_id: int) -> StackState:
        """Start one Kafka node again on its old ports and data after ``stop_node``/``kill_node``;
        returns once it answers and the cluster counts it as an unfenced broker."""
        state = self._require_state()
        node = state.node(node_id)
        if state.owns(node.pid):
            raise StackError(f"Kafka node {node_id} is running (pid {node.pid})")
        _reap()  # the node's previous process, when it ended without the stack stopping it
        self._write_properties(node, state.nodes)
        state = state.with_node(replace(node, pid=self._spawn_kafka(node)))
        self._write_state(state)
        deadline = time.monotonic() + self.settings.start_timeout_s
        wait_until_ready(KafkaSettings(bootstrap=node.bootstrap), timeout_s=_left(deadline))
        _wait_for_brokers(state, {node_id}, deadline)
        return state

    def node_alive(self, node_id: int) -> bool:
        state = self._require_state()
        return state.owns(state.node(node_id).pid)

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
        deadline = time.monotonic() + timeout
        _wait_for_redis(state.redis_url, timeout)
        try:
            wait_until_ready(KafkaSettings(bootstrap=state.kafka_bootstrap), timeout_s=timeout)
            _wait_for_brokers(state, {node.node_id for node in state.nodes}, deadline)
        except StackError as exc:
            log = self._node_dir(1) / "server.log"
            raise StackError(f"{exc}\n--- last lines of {log}:\n{_tail(log)}") from None

    def _start(self) -> StackState:
        previous = self._read_state()
        old = {node.node_id: node for node in previous.nodes} if previous else {}
        taken: set[int] = set()
        redis_port = self.settings.redis_port or _pick_port(
            previous.redis_port if previous else None, taken
        )
        nodes = [
            self._pick_node_ports(node_id, old.get(node_id), taken)
            for node_id in range(1, self.settings.brokers + 1)
        ]
        for node in nodes:
            self._write_properties(node, nodes)
        self._format_storage(nodes, reuse=len(old) == len(nodes))
        redis_pid = self._spawn_redis(redis_port)
        nodes = [replace(node, pid=self._spawn_kafka(node)) for node in nodes]
        first = nodes[0]
        state = StackState(
            first.pid,
            first.port,
            first.controller_port,
            redis_pid,
            redis_port,
            first.sasl_port,
            peers=tuple(nodes[1:]),
            relay_listener_port=first.relay_listener_port,
            relay_port=first.relay_port,
        )
        self._write_state(state)
        return state

    def _pick_node_ports(self, node_id: int, old: KafkaNode | None, taken: set[int]) -> KafkaNode:
        """Ports for one node: its ports from last time when they are still free."""
        fixed = self.settings.kafka_port if node_id == 1 else 0
        relays = self.settings.relays
        return KafkaNode(
            node_id,
            0,
            fixed or _pick_port(old.port if old else None, taken),
            _pick_port(old.controller_port if old else None, taken),
            _pick_port(old.sasl_port if old else None, taken),
            _pick_port(old.relay_listener_port if old else None, taken) if relays else 0,
            _pick_port(old.relay_port if old else None, taken) if relays else 0,
        )

    def _node_dir(self, node_id: int) -> Path:
        return self.dir / ("kafka" if node_id == 1 else f"kafka-{node_id}")

    def _write_properties(self, node: KafkaNode, nodes: Sequence[KafkaNode]) -> None:
        node_dir = self._node_dir(node.node_id)
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "server.properties").write_text(
            _server_properties(node_dir / "data", node, nodes)
        )

    def _format_storage(self, nodes: Sequence[KafkaNode], *, reuse: bool) -> None:
        """Format every node's storage with one new cluster id, unless all of them hold a
        formatted log of a quorum of this size (then they carry on with their data)."""
        data = [self._node_dir(node.node_id) / "data" for node in nodes]
        if reuse and all((d / "meta.properties").is_file() for d in data):
            return
        cluster_id = _cluster_id()
        for node, directory in zip(nodes, data, strict=True):
            shutil.rmtree(directory, ignore_errors=True)
            properties = self._node_dir(node.node_id) / "server.properties"
            format_command = ["kafka.tools.StorageTool", "format", "-t", cluster_id]
            _run_checked(
                [*self._java(node), *format_command, "-c", str(properties)],
                f"formatting the storage of Kafka node {node.node_id}",
            )

    def _java(self, node: KafkaNode) -> list[str]:
        return [
            "java",
            f"-Xmx{self.settings.kafka_heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            f"-Dkafka.logs.dir={self._node_dir(node.node_id)}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            f"{kafka_libs()}/*",
        ]

    def _spawn_kafka(self, node: KafkaNode) -> int:
        node_dir = self._node_dir(node.node_id)
        return self._spawn(
            [*self._java(node), "kafka.Kafka", str(node_dir / "server.properties")],
            node_dir / "stdout.log",
        )

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
            return StackState.from_json(json.loads(self.state_file.read_text()))
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
        state = replace(state, started=started)
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(asdict(state), indent=2))
        scratch.replace(self.state_file)


def _server_properties(data_dir: Path, node: KafkaNode, nodes: Sequence[KafkaNode]) -> str:
    """One node's settings; replication factors and min ISR follow the cluster's size."""
    listeners = {
        "PLAINTEXT": node.port,
        "CONTROLLER": node.controller_port,
        "SASL_PLAINTEXT": node.sasl_port,
    }
    advertised = {"PLAINTEXT": node.port, "SASL_PLAINTEXT": node.sasl_port}
    if node.relay_listener_port:
        listeners["RELAY"] = node.relay_listener_port
        advertised["RELAY"] = node.relay_port
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(
            f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes
        ),
        "listeners": ",".join(f"{name}://{HOST}:{port}" for name, port in listeners.items()),
        "advertised.listeners": ",".join(
            f"{name}://{HOST}:{port}" for name, port in advertised.items()
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT,RELAY:PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        "log.retention.hours": "24",
        **_replication(len(nodes)),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _replication(brokers: int) -> dict[str, str]:
    """Every partition on every node, and an acknowledged write on at least two of three
    (one node: on that one)."""
    factor, min_isr = (str(brokers), str(min(2, brokers)))
    return {
        "default.replication.factor": factor,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


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


def _stop(state: StackState, name: str, pid: int, grace_s: float = TERM_GRACE_S) -> bool:
    """Stop ``name``'s server if ``pid`` is still it; True if it was running."""
    if state.owns(pid):
        return _terminate(pid, grace_s)
    identity = Identity.of(pid)
    if identity is not None:
        log.warning(
            "stale stack entry not signalled",
            server=name,
            pid=pid,
            recorded=state.started.get(str(pid)),
            now=" ".join(identity.cmdline),
        )
    _reap()
    return False


def _reap() -> None:
    """Collect the exit status of every server this process started that has ended, so none
    is left for the interpreter's exit to find unwaited: a server that ended on its own is a
    zombie the stack no longer owns (no command line to match), and a node killed from
    outside and started again leaves its old process behind."""
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            del _children[pid]


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


def _terminate(pid: int, grace_s: float = TERM_GRACE_S) -> bool:
    """SIGTERM the process group, SIGKILL it after ``grace_s`` (at once for 0); True if it
    was running."""
    if not _alive(pid):
        _reap()
        return False
    if grace_s > 0:
        _signal_group(pid, signal.SIGTERM)
    if grace_s <= 0 or not _wait_gone(pid, grace_s):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, TERM_GRACE_S)
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
    port = previous if previous and previous not in taken and port_free(HOST, previous) else 0
    while not port or port in taken:
        port = free_port(HOST)
    taken.add(port)
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


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _wait_for_brokers(state: StackState, node_ids: set[int], deadline: float) -> None:
    """Wait until each of ``node_ids`` is a registered, unfenced broker of the cluster."""
    registered: set[int] = set()
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with admin(KafkaSettings(bootstrap=state.kafka_bootstrap), timeout_s=5.0) as client:
                registered = {b.node_id for b in client.brokers() if not b.fenced}
        except (MessagingError, StackError) as exc:
            last_error = exc
        if node_ids <= registered:
            return
        time.sleep(0.5)
    raise StackError(
        f"Kafka nodes {sorted(node_ids - registered)} did not join the cluster "
        f"(registered: {sorted(registered)}; {last_error or 'no error'})"
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
