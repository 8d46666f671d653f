"""The cluster side: an admin client, readiness, topics, a consumer group's lag, and the
cluster's own health (brokers, the KRaft quorum's leader, under-replicated partitions)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka import TopicPartition as KafkaTopicPartition
from kafka import errors as kafka_errors
from kafka.admin import (
    ConfigResource,
    ConfigResourceType,
    OffsetSpec,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.protocol.consumer.offsets import IsolationLevel

from common.errors import StackError
from common.settings import KafkaSettings
from messaging.config import client_config
from messaging.errors import MessagingError, RetriableError, translated
from messaging.types import TopicPartition


@dataclass(frozen=True)
class TopicSpec:
    """How to create one topic; ``None`` leaves a setting to the broker's default."""

    name: str
    partitions: int
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    retention_ms: int | None = None
    max_message_bytes: int | None = None
    """The largest record batch the broker accepts on this topic (``max.message.bytes``)."""

    def request(self) -> dict[str, Any]:
        configs = {}
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        if self.min_insync_replicas is not None:
            configs["min.insync.replicas"] = str(self.min_insync_replicas)
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return {
            "num_partitions": self.partitions,
            "replication_factor": self.replication_factor or -1,
            "configs": configs,
        }


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as the cluster's metadata describes it."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class BrokerInfo:
    """One broker as the cluster lists it (fenced: registered but not serving)."""

    node_id: int
    host: str
    port: int
    fenced: bool


@dataclass(frozen=True)
class QuorumInfo:
    """The KRaft metadata quorum: who leads it, and how far each voter has replicated."""

    leader: int
    """The active controller's node id (-1 while an election runs)."""
    epoch: int
    high_watermark: int
    voters: dict[int, int]
    """Each voter's node id and its last known log end offset (-1: unknown)."""


@dataclass(frozen=True)
class PartitionLag:
    """A consumer group's position on one partition."""

    tp: TopicPartition
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


class Admin:
    """A connected admin client (use as a context manager, or :func:`admin`)."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float = 10.0) -> None:
        self.settings = settings
        try:
            self._client = KafkaAdminClient(
                **client_config(settings),
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
            )
        except kafka_errors.KafkaError as exc:
            raise StackError(f"Kafka at {settings.bootstrap} is not reachable: {exc}") from exc

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def list_topics(self) -> set[str]:
        with translated():
            return set(self._client.list_topics())

    def create_topics(self, specs: list[TopicSpec], *, wait_s: float = 30.0) -> list[str]:
        """Create each topic that does not exist yet; wait until all are usable. Returns the
        names it created (a concurrent creator may win the race; the topic is there)."""
        existing = self.list_topics()
        missing = [spec for spec in specs if spec.name not in existing]
        with translated():
            if missing:
                with contextlib.suppress(kafka_errors.TopicAlreadyExistsError):
                    self._client.create_topics(
                        {spec.name: spec.request() for spec in missing}, wait_for_metadata=True
                    )
            self._client.wait_for_topics(
                [spec.name for spec in specs], timeout_ms=int(wait_s * 1000)
            )
        return [spec.name for spec in missing]

    def describe(self, topics: list[str] | None = None) -> list[PartitionInfo]:
        with translated():
            described = self._client.describe_topics(topics)
        return [
            PartitionInfo(
                topic["name"],
                p["partition_index"],
                p["leader_id"],
                tuple(p["replica_nodes"]),
                tuple(p["isr_nodes"]),
            )
            for topic in described
            for p in topic["partitions"]
        ]

    def topic_configs(self, topic: str) -> dict[str, str]:
        """The topic's settings that differ from the broker's defaults."""
        with translated():
            result = self._client.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        return _configs_of(result)

    def group_lag(self, group: str, topic: str, *, wait_s: float = 10.0) -> list[PartitionLag]:
        """The group's committed offset and the end offset per partition.

        Retriable errors (a coordinator still loading, the offsets topic being created on a
        new cluster's first use) are retried for ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._group_lag(group, topic)
            except RetriableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def end_offsets(self, topic: str, *, committed: bool = False) -> dict[TopicPartition, int]:
        """The next offset to be written, per partition of ``topic``; with ``committed``, the
        last stable offset instead (where a read_committed consumer stops while a transaction
        is open)."""
        isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
        return self._offsets(topic, OffsetSpec.LATEST, isolation)

    def start_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The first offset still on the log, per partition of ``topic``."""
        return self._offsets(topic, OffsetSpec.EARLIEST, IsolationLevel.READ_UNCOMMITTED)

    def _offsets(self, topic: str, spec: Any, isolation: Any) -> dict[TopicPartition, int]:
        partitions = [
            KafkaTopicPartition(info.topic, info.partition) for info in self.describe([topic])
        ]
        with translated():
            found = self._client.list_partition_offsets(
                {tp: spec for tp in partitions}, isolation_level=isolation
            )
        return {TopicPartition(tp.topic, tp.partition): found[tp].offset for tp in partitions}

    def offsets_at(self, topic: str, timestamp_ms: int) -> dict[TopicPartition, int | None]:
        """Per partition of ``topic``, the first offset whose record timestamp is at or after
        ``timestamp_ms``; None where no record is that recent."""
        partitions = [
            KafkaTopicPartition(info.topic, info.partition) for info in self.describe([topic])
        ]
        with translated():
            found = self._client.list_partition_offsets({tp: timestamp_ms for tp in partitions})
        return {
            TopicPartition(tp.topic, tp.partition): found[tp].offset
            if found[tp].offset >= 0
            else None
            for tp in partitions
        }

    def _group_lag(self, group: str, topic: str) -> list[PartitionLag]:
        ends = self.end_offsets(topic)
        partitions = [KafkaTopicPartition(tp.topic, tp.partition) for tp in ends]
        with translated():
            committed = self._client.list_group_offsets({group: partitions}).get(group, {})
        rows = []
        for tp, end in sorted(ends.items()):
            meta = committed.get(KafkaTopicPartition(tp.topic, tp.partition))
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            rows.append(PartitionLag(tp, offset, end))
        return rows

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """Every offset the group has committed."""
        with translated():
            offsets = self._client.list_group_offsets(group).get(group, {})
        return {
            TopicPartition(tp.topic, tp.partition): meta.offset
            for tp, meta in offsets.items()
            if meta.offset >= 0
        }

    def upsert_scram_user(self, user: str, password: str) -> None:
        upsert = UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password)
        with translated():
            self._client.alter_user_scram_credentials([upsert])

    def cluster(self) -> dict[str, Any]:
        """Brokers and the controller, as the cluster describes itself."""
        with translated():
            described: dict[str, Any] = self._client.describe_cluster()
        return described

    def brokers(self) -> list[BrokerInfo]:
        """The registered brokers, fenced ones included, by node id."""
        brokers = [
            BrokerInfo(b["broker_id"], b["host"], b["port"], bool(b.get("is_fenced", False)))
            for b in self.cluster()["brokers"]
        ]
        return sorted(brokers, key=lambda b: b.node_id)

    def quorum(self) -> QuorumInfo:
        """The metadata quorum (DescribeQuorum). A KRaft broker answers DescribeCluster with
        a random live broker as "controller", so this is the only way to the real leader."""
        with translated():
            described = self._client.describe_metadata_quorum()
        partition = described["topics"][0]["partitions"][0]
        if partition.get("error"):
            raise RetriableError(f"describing the metadata quorum: {partition['error']}")
        return QuorumInfo(
            leader=partition["leader_id"],
            epoch=partition["leader_epoch"],
            high_watermark=partition["high_watermark"],
            voters={v["replica_id"]: v["log_end_offset"] for v in partition["current_voters"]},
        )

    def under_replicated(self) -> list[PartitionInfo]:
        """Partitions, internal ones included, whose in-sync replicas are fewer than their
        replicas or that have no leader."""
        return [p for p in self.describe() if p.under_replicated or p.leader < 0]


def _configs_of(result: Any) -> dict[str, str]:
    """``{"topic": {name: {key: {"value": ...}}}}`` (kafka-python 3.0) to ``{key: value}``."""
    configs: dict[str, str] = {}
    for entries in result.get("topic", {}).values():
        for key, entry in entries.items():
            configs[key] = str(entry.get("value"))
    return configs


@contextmanager
def admin(settings: KafkaSettings, *, timeout_s: float = 10.0) -> Iterator[Admin]:
    """A connected admin client, closed on exit."""
    client = Admin(settings, timeout_s=timeout_s)
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
            with admin(settings, timeout_s=5.0) as client:
                client.list_topics()
                return
        except (MessagingError, StackError, OSError) as exc:
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


def ensure_topics(
    settings: KafkaSettings,
    partitions: Mapping[str, int],
    *,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> None:
    """Create each topic that does not exist yet with its partition count; wait until usable.

    The replication factor is the broker's ``default.replication.factor`` unless given.
    """
    specs = [
        TopicSpec(name, count, replication_factor, min_insync_replicas)
        for name, count in partitions.items()
    ]
    with admin(settings) as client:
        client.create_topics(specs)
