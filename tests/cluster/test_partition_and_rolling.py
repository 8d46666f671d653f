"""A worker cut off from every broker for longer than its session timeout, and a rolling
restart of all three brokers under load. Three worker processes and the trainer, both
guarantees, on the three-node cluster (tests/cluster/conftest.py). Figures:
docs/reliability.md, "Cluster faults".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tagstream.stack import LocalStack
from tests.cluster.conftest import Cluster
from tests.cluster.relay import Relay
from tests.cluster.scenarios import GUARANTEES, cluster_scale, first_prediction_after
from tests.cluster.test_faults import _check, _stream
from tests.reliability.support import longest_gap_s, record, timestamp
from tests.worker.kafka_tools import WorkerProcess, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.cluster_scenario,
    pytest.mark.timeout(900),
]

CUT = 0
"""The slot of the worker that reaches Kafka through the relays."""


@pytest.fixture(scope="module")
def _open_relays(_cluster_stack: LocalStack) -> Iterator[list[Relay]]:
    """One relay per node, from its advertised RELAY port to its RELAY listener, open for the
    whole module: closing a relay and listening on its port again in the next test failed
    with ``EADDRINUSE`` (the scenario under both guarantees, one after the other)."""
    state = _cluster_stack.status()
    assert state is not None, "the cluster's stack is gone"
    opened = [Relay(n.relay_port, n.relay_listener_port) for n in state.nodes]
    yield opened
    for relay in opened:
        relay.close()


@pytest.fixture
def relays(cluster: Cluster, _open_relays: list[Relay]) -> Iterator[list[Relay]]:
    """The relays, passing bytes; healed again after the test, however it ended."""
    for relay in _open_relays:
        relay.heal()
    yield _open_relays
    for relay in _open_relays:
        relay.heal()


def _assigned_after(worker: WorkerProcess, wall_time: float) -> set[int]:
    """Partitions the worker was assigned in rebalances logged after ``wall_time``."""
    return {
        p
        for line in worker.events("partitions assigned")
        if timestamp(line["timestamp"]) > wall_time
        for p in line["partitions"]
    }


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_worker_cut_off_from_every_broker_is_fenced_and_commits_nothing_after(
    guarantee: str,
    request: pytest.FixtureRequest,
    cluster: Cluster,
    relays: list[Relay],
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """One worker's every connection goes through relays that are cut for longer than its
    session timeout: the group drops it, its partitions move to the other two, and when the
    path returns it learns it lost them. Under exactly-once nothing it sent from the cut on
    and before it rejoined the group is ever committed (its transaction is fenced or
    aborted); after it rejoins it works on what it is given again."""
    size = cluster_scale()
    stream = _stream(
        request, cluster, service_env, toy_model, processes, tmp_path, guarantee, {CUT}
    )
    stream.wait_under_way()
    held = set(stream.workers[CUT].events("partitions assigned")[-1]["partitions"])
    assert held, "the worker to be cut off holds partitions"
    cut_at = time.time()
    for relay in relays:
        relay.cut()

    # Every instance of a slot counts: an exactly-once worker whose commit outlasts its
    # deadline while cut off stops, and is started again in its slot.
    def slot_events(slots: list[int], event: str) -> list[dict[str, Any]]:
        return [line for i in slots for w in stream.instances(i) for line in w.events(event)]

    def assigned_after(slots: list[int], wall_time: float) -> set[int]:
        return set().union(
            *(_assigned_after(w, wall_time) for i in slots for w in stream.instances(i))
        )

    others = [i for i in range(len(stream.workers)) if i != CUT]
    wait_until(
        lambda: held <= assigned_after(others, cut_at),
        size.cut_s + 60,
        "the cut-off worker's partitions moved to the others",
    )
    moved_s = round(time.time() - cut_at, 1)
    threading.Event().wait(max(0.0, size.cut_s - (time.time() - cut_at)))
    for relay in relays:
        relay.heal()
    healed_at = time.time()
    wait_until(
        lambda: bool(slot_events([CUT], "partitions lost") or assigned_after([CUT], healed_at)),
        120,
        "the cut-off worker back in the group",
    )
    outcome = stream.finish(size.patience_s)
    rejoined = [  # read once the workers have stopped: their logs are complete
        timestamp(line["timestamp"])
        for line in slot_events([CUT], "partitions assigned")
        if timestamp(line["timestamp"]) > cut_at
    ]
    rejoined_at = min(rejoined) if rejoined else float("inf")
    zombie = [
        r
        for r in outcome.records
        if r["worker_id"] == stream.worker_id(CUT) and cut_at <= r["_timestamp"] < rejoined_at
    ]
    record(
        "cluster-d-worker-cut-off",
        **stream.figures(
            outcome,
            cut_s=round(healed_at - cut_at, 1),
            partitions_moved_s=moved_s,
            committed_by_cut_worker_after_cut=len(zombie),
            rejoined_after_heal_s=round(rejoined_at - healed_at, 1) if rejoined else None,
            cut_worker_lost_partitions=bool(slot_events([CUT], "partitions lost")),
            recovery_s=first_prediction_after(
                outcome.records, cut_at, held, not_by=stream.worker_id(CUT)
            ),
        ),
    )
    _check(outcome, stream)
    if guarantee == "exactly_once":
        assert zombie == [], f"the cut-off worker committed {len(zombie)} results after the cut"


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_rolling_restart_of_all_three_brokers_under_load(
    guarantee: str,
    request: pytest.FixtureRequest,
    cluster: Cluster,
    service_env: dict[str, str],
    toy_model: Path,
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Each node in turn is stopped (SIGTERM), started again, and the next one waits until
    no partition is under-replicated, as an operator upgrading the cluster would."""
    size = cluster_scale()
    stream = _stream(request, cluster, service_env, toy_model, processes, tmp_path, guarantee)
    stream.wait_under_way(0.1)
    started_at = time.time()
    for node_id in cluster.node_ids:
        cluster.local.stop_node(node_id)
        cluster.local.start_node(node_id)
        cluster.heal()
    rolled_s = round(time.time() - started_at, 1)
    outcome = stream.finish(size.patience_s)
    during = [r for r in outcome.records if started_at <= r["_timestamp"]]
    record(
        "cluster-b-rolling-restart",
        **stream.figures(
            outcome,
            rolling_restart_s=rolled_s,
            longest_prediction_gap_s=round(longest_gap_s(during), 1),
            recovery_s=round(longest_gap_s(during), 1),
        ),
    )
    _check(outcome, stream)
