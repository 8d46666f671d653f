"""Faults only a cluster has: a partition leader killed, the active controller killed, too
few brokers for ``min.insync.replicas``. Three worker processes and the trainer run each
one under both guarantees on the three-node cluster (tests/cluster/conftest.py); nothing is
missing, nothing is predicted twice under exactly-once, every labelled article is stored
once. Figures: docs/reliability.md, "Cluster faults".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.errors import StackError
from messaging import MessagingError
from messaging.admin import admin
from tests.cluster.conftest import Cluster
from tests.cluster.probe import probe_send
from tests.cluster.scenarios import (
    GUARANTEES,
    Outcome,
    Stream,
    cluster_scale,
    first_prediction_after,
)
from tests.reliability.support import record
from tests.worker.kafka_tools import TopicReader, WorkerProcess, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.cluster_scenario,
    pytest.mark.timeout(900),
]


def _stream(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
    guarantee: str,
    relayed: set[int] | None = None,
    producer_backend: str = "kafka-python",
) -> Stream:
    """The scenario's stream; its supervisor stops when the test ends, passed or failed,
    before the ``processes`` fixture stops the processes (finalizers run last in, first out)."""
    size = cluster_scale()
    stream = Stream(
        cluster,
        service_env,
        toy_model,
        processes,
        tmp_path,
        guarantee,
        size.articles,
        size.articles / size.stream_s,
        relayed or set(),
        producer_backend,
    )
    request.addfinalizer(stream.stop_supervising)
    return stream


STOPS = (
    "TransactionStuckError",
    "DeadlineError",
    "FencedError",
)
"""The reasons a worker stops by itself on purpose: a transactional call got no answer in
time, so its outcome is unknown and only a new instance can fence and settle it; or its
producer was fenced (by a newer instance, or by the coordinator aborting a transaction that
outlived ``transaction.timeout.ms`` and bumping the producer's epoch). A transactional
request that timed out inside kafka-python used to leave its transaction manager refusing
every call; it is now sent again (messaging/producer.py), so that is no longer a planned
stop."""


def _check(outcome: Outcome, stream: Stream) -> None:
    assert outcome.exit_codes == [0, 0, 0, 0], "each worker stopped cleanly or by itself"
    unplanned = [r for r in stream.restarts if not any(stop in r["reason"] for stop in STOPS)]
    assert unplanned == [], "a worker stopped by itself for a reason other than a deadline"
    if stream.guarantee == "at_least_once":
        assert stream.restarts == [], "at-least-once workers never needed a restart"
    assert outcome.counted.missing == 0, outcome.explain(stream.total)
    if stream.guarantee == "exactly_once":
        assert outcome.counted.duplicated == 0, outcome.explain(stream.total)
    assert outcome.stored == outcome.labelled


@pytest.mark.parametrize(
    ("guarantee", "producer_backend"),
    [
        ("at_least_once", "kafka-python"),
        pytest.param("exactly_once", "kafka-python", marks=pytest.mark.cluster_exactly_once),
        ("at_least_once", "confluent-kafka"),
        pytest.param("exactly_once", "confluent-kafka", marks=pytest.mark.cluster_exactly_once),
    ],
)
def test_the_leader_of_the_busiest_partition_killed_and_back_20_s_later(
    guarantee: str,
    producer_backend: str,
    request: pytest.FixtureRequest,
    cluster: Cluster,
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """kill -9 of the node leading the input partition with the most records, mid-stream;
    another in-sync replica takes over and the stream goes on; the node comes back 20 s
    later and catches up. Both guarantees also with the workers' output through librdkafka
    (``TAGSTREAM_KAFKA_PRODUCER_BACKEND=confluent-kafka``)."""
    size = cluster_scale()
    stream = _stream(
        request,
        cluster,
        service_env,
        toy_model,
        processes,
        tmp_path,
        guarantee,
        producer_backend=producer_backend,
    )
    stream.wait_under_way()
    partition, leader = stream.busiest_input_partition()
    killed_at = time.time()
    cluster.local.kill_node(leader)

    def new_leader() -> bool:
        with admin(cluster.kafka, timeout_s=5.0) as client:
            return client.describe([stream.topics["input"]])[partition].leader not in (leader, -1)

    wait_until(lambda: _answered(new_leader), 60, "a new leader for the partition")
    new_leader_s = round(time.time() - killed_at, 1)
    threading.Event().wait(max(0.0, size.leader_down_s - (time.time() - killed_at)))
    cluster.local.start_node(leader)
    back_at = time.time()
    outcome = stream.finish(size.patience_s)
    record(
        "cluster-a-partition-leader-killed",
        **stream.figures(
            outcome,
            killed_node=leader,
            partition=partition,
            node_down_s=round(back_at - killed_at, 1),
            new_leader_s=new_leader_s,
            recovery_s=first_prediction_after(outcome.records, killed_at, {partition}),
        ),
    )
    _check(outcome, stream)


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_the_active_controller_killed(
    guarantee: str,
    request: pytest.FixtureRequest,
    cluster: Cluster,
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """kill -9 of the KRaft quorum's leader (also a broker) mid-stream: the other two elect
    a new one and the stream goes on; the node comes back and rejoins as a follower."""
    size = cluster_scale()
    stream = _stream(request, cluster, service_env, toy_model, processes, tmp_path, guarantee)
    stream.wait_under_way()
    with admin(cluster.kafka) as client:
        controller = client.quorum().leader
    killed_at = time.time()
    cluster.local.kill_node(controller)
    elected: list[int] = []

    def new_controller() -> bool:
        with admin(cluster.kafka, timeout_s=5.0) as client:
            elected.append(client.quorum().leader)
        return elected[-1] not in (controller, -1)

    wait_until(lambda: _answered(new_controller), 60, "a new controller")
    election_s = round(time.time() - killed_at, 1)
    threading.Event().wait(max(0.0, size.controller_down_s - (time.time() - killed_at)))
    cluster.local.start_node(controller)
    back_at = time.time()
    outcome = stream.finish(size.patience_s)
    record(
        "cluster-c-controller-killed",
        **stream.figures(
            outcome,
            killed_node=controller,
            new_controller=elected[-1],
            election_s=election_s,
            node_down_s=round(back_at - killed_at, 1),
            recovery_s=first_prediction_after(outcome.records, killed_at),
        ),
    )
    _check(outcome, stream)
    assert elected[-1] != controller


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_two_brokers_down_commit_nothing_and_everything_resumes_when_one_returns(
    guarantee: str,
    request: pytest.FixtureRequest,
    cluster: Cluster,
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Two of three nodes stopped: ``min.insync.replicas=2`` cannot be met (and the KRaft
    quorum has one voter of three). Results are refused, the workers say so in their logs
    and commit nothing; when one node returns every article is predicted."""
    size = cluster_scale()
    stream = _stream(request, cluster, service_env, toy_model, processes, tmp_path, guarantee)
    stream.wait_under_way()
    down = cluster.node_ids[1:]
    output = _caught_up_reader(cluster, stream.topics["output"])
    try:
        stopped_at = time.time()
        for node_id in down:
            cluster.local.stop_node(node_id)
        outage_started = time.monotonic()
        threading.Event().wait(2.0)  # transactions the last stop caught half-way end first
        before = len(output.snapshot())
        outage_left_s = size.min_isr_down_s - (time.monotonic() - outage_started)
        threading.Event().wait(max(1.0, outage_left_s))
        during = len(output.snapshot()) - before
    finally:
        output.close()
    refusals = _refusals(stream)
    probe = probe_send(cluster.state.kafka_bootstrap, stream.topics["dlq"], b"not an article", 10)
    cluster.local.start_node(down[0])
    back_at = time.time()
    outcome = stream.finish(size.patience_s)
    record(
        "cluster-e-min-isr-unmet",
        **stream.figures(
            outcome,
            stopped_nodes=down,
            outage_s=round(back_at - stopped_at, 1),
            committed_during_outage=during,
            worker_refusals_logged=refusals,
            acks_all_send_during_outage=probe,
            recovery_s=first_prediction_after(outcome.records, back_at),
        ),
    )
    assert during == 0, "nothing committed while min.insync.replicas could not be met"
    assert "NotEnoughReplicas" in probe or "KafkaTimeout" in probe, probe
    if guarantee == "at_least_once":
        assert refusals > 0, "the workers log that their results were refused"
    _check(outcome, stream)


def _answered(condition: Callable[[], bool]) -> bool:
    """``condition()``, False while the cluster does not answer (a client may try the node
    that is down first)."""
    try:
        return condition()
    except (MessagingError, StackError):
        return False


def _caught_up_reader(cluster: Cluster, topic: str) -> TopicReader:
    """A read_committed reader of ``topic`` that has read up to the last stable offsets of a
    moment ago, while every node is up. It must be under way before the outage: once two
    nodes are down, a partition whose leadership moved answers no offset lookup
    (``OFFSET_NOT_AVAILABLE`` until its new leader's high watermark catches up, which takes
    the stopped followers), so a reader opened then may not start reading until the outage
    ends, and would see nothing, or catch up on old records in the middle of it."""
    with admin(cluster.kafka) as client:
        stable = {tp.partition: at for tp, at in client.end_offsets(topic, committed=True).items()}
    reader = TopicReader(cluster.kafka, topic)
    try:
        wait_until(
            lambda: all(reader.positions().get(p, -1) >= at for p, at in stable.items()),
            30,
            f"a reader of {topic} at its last stable offsets {stable}",
        )
    except BaseException:
        reader.close()
        raise
    return reader


def _refusals(stream: Stream) -> int:
    """Warnings the workers logged for results or transactions the cluster refused."""
    events = (
        "result not acknowledged; the partition will be rewound",
        "transaction aborted; its partitions will be rewound",
        "offset commit failed; it is retried",
    )
    return sum(len(w.events(e)) for w in stream.workers for e in events)
