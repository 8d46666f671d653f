"""``stack up --brokers 3``: three KRaft nodes in one quorum, every partition on all three,
two in sync before a write counts; ``stack status`` and ``stack node`` see and drive it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid

import pytest
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from messaging import Producer, ensure_topics
from messaging.admin import admin
from messaging.config import client_config
from tagstream.stack import KafkaNode, _server_properties
from tests.cluster.conftest import Cluster
from tests.cluster.probe import ACKNOWLEDGED, probe_send
from tests.reliability.support import read_topic
from tests.worker.kafka_tools import wait_until

TAGSTREAM = [sys.executable, "-m", "tagstream"]


def test_a_cluster_node_gets_the_quorum_and_replication_settings(tmp_path) -> None:
    nodes = [KafkaNode(i, 0, 9000 + i, 9100 + i) for i in (1, 2, 3)]
    text = _server_properties(tmp_path, nodes[1], nodes)
    settings = dict(line.split("=", 1) for line in text.splitlines())
    assert settings["node.id"] == "2"
    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    )
    for key, value in {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
    }.items():
        assert settings[key] == value, key
    single = dict(
        line.split("=", 1)
        for line in _server_properties(tmp_path, nodes[0], nodes[:1]).splitlines()
    )
    assert single["offsets.topic.replication.factor"] == "1"
    assert single["min.insync.replicas"] == "1"


@pytest.mark.integration
def test_three_nodes_form_one_quorum_and_replicate_every_topic_three_times(
    cluster: Cluster,
) -> None:
    state = cluster.state
    assert state.kafka_bootstrap.count(",") == 2
    with admin(cluster.kafka) as client:
        quorum = client.quorum()
        brokers = client.brokers()
    assert sorted(quorum.voters) == [1, 2, 3]
    assert quorum.leader in (1, 2, 3)
    assert [(b.node_id, b.fenced) for b in brokers] == [(1, False), (2, False), (3, False)]

    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    ensure_topics(cluster.kafka, {topic: 3})
    _commit_a_group_offset(cluster, topic)
    Producer(cluster.kafka, transactional_id=f"tx-{topic}").close(timeout_s=10)
    with admin(cluster.kafka) as client:
        wait_until(
            lambda: {"__consumer_offsets", "__transaction_state"} <= client.list_topics(),
            60,
            "the offsets topic and the transaction log",
        )
        for name in (topic, "__consumer_offsets", "__transaction_state"):
            partitions = client.describe([name])
            assert partitions and all(len(p.replicas) == 3 for p in partitions), name
        assert client.topic_configs("__transaction_state")["min.insync.replicas"] == "2"


@pytest.mark.integration
def test_acks_all_writes_need_two_nodes_in_sync(cluster: Cluster) -> None:
    """With two of three nodes down a write is refused (min ISR 2), with one it goes through."""
    topic = f"min-isr-{uuid.uuid4().hex[:8]}"
    ensure_topics(cluster.kafka, {topic: 1})
    with admin(cluster.kafka) as client:
        leader = client.describe([topic])[0].leader
    others = [n for n in cluster.node_ids if n != leader]
    cluster.local.stop_node(others[0])
    bootstrap = cluster.state.kafka_bootstrap
    assert probe_send(bootstrap, topic, b"one node down", timeout_s=60) == ACKNOWLEDGED
    cluster.local.stop_node(others[1])
    refused = probe_send(bootstrap, topic, b"two nodes down", timeout_s=15)
    assert re.match(r"(NotEnoughReplicas|KafkaTimeout)", refused), refused
    cluster.local.start_node(others[0])
    assert probe_send(bootstrap, topic, b"back to two", timeout_s=60) == ACKNOWLEDGED


@pytest.mark.integration
def test_a_transaction_commits_after_its_coordinator_was_killed(cluster: Cluster) -> None:
    """The commit's request finds its coordinator's node dead: it goes to the new coordinator
    and the transaction commits within the deadline (kafka-python dropped the request, and the
    commit raised DeadlineError when the deadline passed; see messaging/producer.py)."""
    topic = f"txn-failover-{uuid.uuid4().hex[:8]}"
    ensure_topics(cluster.kafka, {topic: 1})
    producer = Producer(cluster.kafka, transactional_id=f"t-{topic}", transaction_timeout_s=60)
    try:
        producer.begin()
        producer.send(topic, b"k", json.dumps({"n": 1}).encode(), None)
        producer.flush(30)
        cluster.local.kill_node(_transaction_coordinator(producer))
        producer.commit()
    finally:
        producer.close(5)
    assert _committed(cluster, topic) == [1]


REQUEST_TIMEOUT_S = 30.0
"""kafka-python's ``request_timeout_ms``, which every producer of the project keeps."""


@pytest.mark.integration
def test_a_transaction_commits_after_its_coordinator_froze_past_the_request_timeout(
    cluster: Cluster,
) -> None:
    """The coordinator's node freezes (a long pause: its connections stay open, nothing
    answers) while the commit waits, so the commit's request times out in the client: it is
    sent again, to whichever node coordinates by then, and the transaction commits (kafka-python
    made the timeout fatal, "Could not execute transactional request for unknown reasons"; see
    messaging/producer.py)."""
    topic = f"txn-frozen-{uuid.uuid4().hex[:8]}"
    ensure_topics(cluster.kafka, {topic: 1})
    producer = Producer(cluster.kafka, transactional_id=f"t-{topic}", transaction_timeout_s=90)
    try:
        producer.begin()
        producer.send(topic, b"k", json.dumps({"n": 1}).encode(), None)
        producer.flush(30)
        pid = cluster.state.node(_transaction_coordinator(producer)).pid
        os.killpg(pid, signal.SIGSTOP)
        thaw = threading.Timer(REQUEST_TIMEOUT_S + 10, os.killpg, (pid, signal.SIGCONT))
        thaw.start()
        try:
            producer.commit()
        finally:
            thaw.cancel()
            os.killpg(pid, signal.SIGCONT)
    finally:
        producer.close(5)
    assert _committed(cluster, topic) == [1]


def _committed(cluster: Cluster, topic: str, timeout_s: float = 60.0) -> list[int]:
    """The values a read_committed reader gets from ``topic`` once it gets any. A commit
    returns when the coordinator has logged it; the markers that make its records readable
    are written after that, later still when a partition's leader was on the killed node (a
    CI run read the topic at once and found it empty)."""
    values: list[int] = []

    def readable() -> bool:
        values[:] = [r["n"] for r in read_topic(cluster.kafka, topic)]
        return bool(values)

    wait_until(readable, timeout_s, f"the committed record of {topic} readable")
    return values


def _transaction_coordinator(producer: Producer) -> int:
    """The node id of ``producer``'s transaction coordinator (kafka-python names it
    ``coordinator-N``)."""
    manager = producer._producer._transaction_manager
    name = manager._transaction_coordinator
    assert name is not None, "no transaction coordinator known yet"
    return int(str(name).rsplit("-", 1)[-1])


@pytest.mark.integration
def test_status_names_nodes_leader_and_under_replicated_partitions(cluster: Cluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env["TAGSTREAM_STACK_DIR"] = str(cluster.local.dir)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TAGSTREAM, "stack", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    topic = f"status-{uuid.uuid4().hex[:8]}"
    ensure_topics(cluster.kafka, {topic: 3})
    healthy = cli("status")
    assert healthy.returncode == 0, healthy.stderr
    for node_id in (1, 2, 3):
        assert f"kafka node {node_id}: running" in healthy.stdout
    assert "under-replicated partitions: 0" in healthy.stdout
    leader = int(healthy.stdout.split("controller leader: node ")[1].split()[0])

    killed = cli("node", "kill", str(leader))
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: f"{topic}-" in cli("status").stdout, 60, "the topic under-replicated")
    degraded = cli("status").stdout
    assert f"kafka node {leader}: DOWN" in degraded
    assert f"controller leader: node {leader} " not in degraded
    assert "under-replicated partitions: 0" not in degraded

    started = cli("node", "start", str(leader))
    assert started.returncode == 0, started.stderr
    assert f"kafka node {leader}: running" in cli("status").stdout
    again = cli("up", "--brokers", "3")
    assert "already running" in again.stdout
    assert f"KAFKA_BOOTSTRAP={cluster.state.kafka_bootstrap}" in again.stdout


def _commit_a_group_offset(cluster: Cluster, topic: str) -> None:
    """Commit one offset for a group, which creates the offsets topic. The partition is
    assigned by hand: a subscribing consumer whose first metadata for a topic just created
    has no partitions yet is assigned nothing, and kafka-python does not rejoin until its
    metadata is next refreshed (a CI run waited 60 s for that)."""
    consumer = KafkaConsumer(
        **client_config(cluster.kafka), group_id=f"g-{topic}", enable_auto_commit=False
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.commit({partition: OffsetAndMetadata(0, "", -1)}, timeout_ms=60_000)
    finally:
        consumer.close()
