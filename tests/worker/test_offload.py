"""The inference process (worker/offload.py): the same scores as in process, and a child
that dies, hangs, or is signalled does not take the worker with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model.errors import ModelError
from model.inference import Classifier
from model.toy import toy_artifact
from tests.worker.kafka_tools import alive
from worker import offload
from worker.inference import Scorer
from worker.offload import InferenceProcess, InferenceProcessError, OffloadedModel

LABELS = ("earn", "acq", "crude", "grain")
TEXTS = [
    "shares of the company rose",
    "the market said it would buy crude oil for the year in a statement on monday " * 6,
    "grain",
    "analysts expected the company to report a loss " * 3,
    "",
]


def wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def artifact_bytes() -> bytes:
    return toy_artifact(LABELS).to_bytes()


@pytest.fixture
def process() -> Iterator[InferenceProcess]:
    restarts: list[int] = []
    handle = InferenceProcess(
        device="cpu", threads=1, timeout_s=30.0, on_restart=lambda: restarts.append(1)
    )
    handle.restarts = restarts  # type: ignore[attr-defined]
    yield handle
    handle.close()


def test_scores_and_labels_are_the_ones_the_model_gives_in_process(
    artifact_bytes: bytes, process: InferenceProcess
) -> None:
    local = Classifier.from_artifact(toy_artifact(LABELS), version=1, device="cpu", threads=1)
    local.warm_up()
    remote = OffloadedModel(artifact_bytes, None, 1, process)
    remote.warm_up()
    ids = remote.encode(TEXTS)
    assert ids == local.encode(TEXTS)
    got, want = remote.scores(ids), local.scores(ids)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(got, want, atol=1e-6)
    # each article alone gets the scores it gets in the batch
    alone = np.vstack([remote.scores([one]) for one in ids])
    np.testing.assert_allclose(alone, got, atol=1e-5)
    for row in got:
        assert remote.decide(row) == local.decide(row)
    assert remote.labels == local.labels


def test_a_bad_input_fails_alone_and_the_child_goes_on(
    artifact_bytes: bytes, process: InferenceProcess
) -> None:
    remote = OffloadedModel(artifact_bytes, None, 1, process)
    ids = remote.encode(TEXTS)
    with pytest.raises(ModelError, match="token ids must be in"):
        remote.scores([ids[0], [10**6]])
    pid = process.pid
    scored = Scorer(bucket_size=64).score(remote, [ids[0], [10**6], ids[1]])
    assert isinstance(scored.rows[1], ModelError)
    assert all(isinstance(scored.rows[i], np.ndarray) for i in (0, 2))
    assert scored.systemic is None
    assert process.pid == pid, "the child survived the failed requests"


def test_a_killed_child_is_started_again_and_given_the_model_again(
    artifact_bytes: bytes, process: InferenceProcess
) -> None:
    remote = OffloadedModel(artifact_bytes, None, 3, process)
    ids = remote.encode(TEXTS)
    before = remote.scores(ids)
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first, 10)
    after = remote.scores(ids)  # a new child, which is sent version 3 on being asked for it
    np.testing.assert_array_equal(after, before)
    assert process.pid not in (None, first)
    assert process.restarts == [1]  # type: ignore[attr-defined]


def test_a_child_killed_during_a_request_fails_that_request_only(
    artifact_bytes: bytes, process: InferenceProcess
) -> None:
    remote = OffloadedModel(artifact_bytes, None, 1, process)
    ids = remote.encode(TEXTS)
    remote.scores(ids)
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # so the kill lands while the request waits
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {pid}"])
    with pytest.raises(InferenceProcessError, match="ended"):
        remote.scores(ids)
    killer.wait(10)
    assert remote.scores(ids).shape == (len(TEXTS), len(LABELS))


def test_a_hung_child_is_killed_at_the_deadline_and_replaced(artifact_bytes: bytes) -> None:
    process = InferenceProcess(device="cpu", threads=1, timeout_s=1.0)
    try:
        remote = OffloadedModel(artifact_bytes, None, 1, process)
        ids = remote.encode(TEXTS)
        remote.scores(ids)
        hung = process.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(InferenceProcessError, match="did not answer 'score' within 1 s"):
            remote.scores(ids)
        assert time.monotonic() - started < 10
        assert wait_gone(hung, 10), "the hung child was killed"
        assert remote.scores(ids).shape == (len(TEXTS), len(LABELS))
    finally:
        process.close()


def test_restarts_stop_when_the_child_keeps_dying(
    artifact_bytes: bytes, process: InferenceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offload, "MAX_RESTARTS", 1)
    remote = OffloadedModel(artifact_bytes, None, 1, process)
    ids = remote.encode(TEXTS)
    for _ in range(2):  # the first start and one restart are allowed
        remote.scores(ids)
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid, 10)
    started = time.monotonic()
    with pytest.raises(InferenceProcessError, match="started 2 times in the last 60 s"):
        remote.scores(ids)
    assert time.monotonic() - started < 1, "refused at once, without starting a child"


def test_the_child_ignores_sigterm_and_exits_when_the_worker_is_killed(
    artifact_bytes: bytes, tmp_path: Path
) -> None:
    """A signal to the process group leaves the model to the draining worker; the worker's
    death (SIGKILL: no clean-up runs) ends the child through its closed pipe."""
    artifact = tmp_path / "model.safetensors"
    artifact.write_bytes(artifact_bytes)
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from common.logging import configure
        from worker.offload import InferenceProcess, OffloadedModel
        configure("WARNING")
        process = InferenceProcess(device="cpu", threads=1, timeout_s=30.0)
        model = OffloadedModel(Path({str(artifact)!r}).read_bytes(), None, 1, process)
        model.warm_up()
        print(process.pid, flush=True)
        for line in sys.stdin:
            print(model.scores(model.encode([line])).shape, flush=True)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        child = int(parent.stdout.readline())
        os.kill(child, signal.SIGTERM)
        os.kill(child, signal.SIGINT)
        parent.stdin.write("shares of the company rose\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == f"(1, {len(LABELS)})"
        assert alive(child)
        parent.kill()
        parent.wait(10)
        assert wait_gone(child, 15), "the child outlived its worker"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
        if parent.stdin is not None:
            parent.stdin.close()


def test_a_closed_process_stops_its_child_and_refuses_requests(
    artifact_bytes: bytes, process: InferenceProcess
) -> None:
    remote = OffloadedModel(artifact_bytes, None, 1, process)
    remote.warm_up()
    pid = process.pid
    assert pid is not None
    process.close()
    assert wait_gone(pid, 10)
    with pytest.raises(InferenceProcessError, match="closed"):
        remote.scores([[1, 2, 3]])
