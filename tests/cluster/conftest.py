"""A three-node Kafka cluster of this suite's own, for the faults only a cluster has.

One private :class:`~tagstream.stack.LocalStack` with ``brokers=3`` (and a RELAY listener per
node, for the scenario that cuts one worker off) for the whole session: the session's
one-node stack, which other tests use, is never touched. ``cluster`` hands each test the
cluster with every node running and no partition under-replicated, whatever the test before
it stopped or killed.

kafka-python 3.0.12 left the socket of each failed connection attempt open (closed now by
``messaging.sockets``), and a client in the test process tries the node that is down; the
suite's ``filterwarnings = error`` would turn any socket left over into a failure of whichever
test collects it. As a guard, those warnings are ignored while a test here runs and the
leftovers collected after it (``_collect_leaked_sockets``); every other warning is still an
error.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.errors import StackError
from common.settings import KafkaSettings
from messaging.admin import admin
from tagstream.stack import LocalStack, StackSettings, StackState


@dataclass(frozen=True)
class Cluster:
    """The running cluster and how to reach it."""

    local: LocalStack

    @property
    def state(self) -> StackState:
        state = self.local.status()
        assert state is not None, "the cluster's stack is gone"
        return state

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.state.kafka_bootstrap)

    @property
    def node_ids(self) -> list[int]:
        return [node.node_id for node in self.state.nodes]

    def heal(self, timeout_s: float = 180.0) -> None:
        """Start every node that is down; wait until no partition is under-replicated."""
        for node in self.state.nodes:
            if not self.local.node_alive(node.node_id):
                self.local.start_node(node.node_id)
        deadline = time.monotonic() + timeout_s
        lagging: object = "no answer"
        while time.monotonic() < deadline:
            try:
                with admin(self.kafka, timeout_s=5.0) as client:
                    lagging = client.under_replicated()
                if not lagging:
                    return
            except StackError as exc:
                lagging = exc
            time.sleep(0.5)
        raise AssertionError(f"the cluster did not heal in {timeout_s} s: {lagging}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.filterwarnings("ignore::ResourceWarning"))


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def _cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory: Path = tmp_path_factory.mktemp("cluster")
    local = LocalStack(StackSettings(dir=directory, brokers=3, relays=True, kafka_heap="512m"))
    try:
        local.up()
    except StackError as exc:
        pytest.fail(f"the three-node cluster could not start: {exc}", pytrace=False)
    try:
        yield local
    finally:
        local.down(discard=True)


@pytest.fixture
def cluster(_cluster_stack: LocalStack) -> Cluster:
    """The three-node cluster, every node up and every partition fully replicated."""
    cluster = Cluster(_cluster_stack)
    cluster.heal()
    return cluster
