"""Worker processes under test: ``python -m worker`` as a child (the entry point of
``tagstream worker run`` that ``--processes`` starts too, without loading the rest of the CLI),
its /readyz, its Prometheus metrics and its peak resident memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from common.settings import KafkaSettings

PREFIX = "tagstream_worker_"
JOIN_TIMEOUT_S = 40.0
"""A worker not holding its partitions this long after starting is replaced (see WorkerGroup)."""
QUICK_GROUP_SETTINGS = {"session_timeout_ms": "10000", "revoke_timeout_s": "5"}
"""A member that vanishes is noticed in 10 s rather than 45 s; throughput does not change."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class WorkerProcess:
    """One worker child process with its settings in ``TAGSTREAM_WORKER_*``."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        kafka: KafkaSettings,
        settings: dict[str, str],
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        port = free_port()
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")} | extra
        env |= {"TAGSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap, "PYTHONUNBUFFERED": "1"}
        if "TAGSTREAM_CACHE" in os.environ:
            env["TAGSTREAM_CACHE"] = os.environ["TAGSTREAM_CACHE"]
        env |= {f"TAGSTREAM_WORKER_{k.upper()}": v for k, v in settings.items()}
        env |= {"TAGSTREAM_WORKER_WORKER_ID": name, "TAGSTREAM_WORKER_METRICS_PORT": str(port)}
        log = log_dir / f"{name}.log"
        # ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH: a
        # lane running other code (PYTHONPATH=<tree>) starts in that tree, or it would run this
        # checkout's code under that lane's name.
        code = extra.get("PYTHONPATH", "").split(os.pathsep)[0] or None
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                cwd=code,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return cls(name, process, port, log)

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, partitions: int | None = None, timeout_s: float = 90.0) -> None:
        """Until /readyz says a model is loaded and partitions (this many) are held."""
        deadline = time.monotonic() + timeout_s
        detail = "not started"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.tail()}")
            try:
                status, detail = self.get("/readyz")
            except OSError as exc:
                status, detail = 0, str(exc)
            if status == 200 and (partitions is None or f", {partitions} partitions" in detail):
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"worker {self.name} not ready in {timeout_s:.0f} s: {detail.strip()}\n{self.tail()}"
        )

    def metrics(self) -> dict[str, float]:
        """Each ``tagstream_worker_*`` sample, summed over its labels, without the prefix."""
        _, text = self.get("/metrics")
        values: dict[str, float] = defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(PREFIX):
                    values[sample.name.removeprefix(PREFIX)] += sample.value
        return dict(values)

    def peak_rss_bytes(self) -> int:
        """VmHWM of the process: the most resident memory it has had."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def pids(self) -> list[int]:
        """The worker's process and the processes it started (its inference process)."""
        return [self.process.pid, *children(self.process.pid)]

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker and its running children have used so far."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a graceful drain), then SIGKILL after ``timeout_s``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class WorkerGroup:
    """Worker processes sharing one consumer group, started together.

    kafka-python 3.0.12 sometimes leaves a consumer blocked forever inside ``poll()`` while it
    joins a fresh group (main thread waiting in ``Fetcher.send_fetches`` for its IO thread);
    the group then waits for that member and nothing is consumed. So that one such hang does
    not sink a whole run, members that are not ready after ``JOIN_TIMEOUT_S`` are killed and
    started again; ``replaced`` counts them and the report says so.
    """

    name: str
    kafka: KafkaSettings
    settings: dict[str, str]
    log_dir: Path
    partitions: int | None = None
    """Of the input topic: each member waits for its share; None: any assignment."""
    workers: list[WorkerProcess] = field(default_factory=list)
    replaced: int = 0

    def start(self, count: int) -> WorkerGroup:
        self.workers = [self._worker(i) for i in range(count)]
        return self

    def _worker(self, index: int) -> WorkerProcess:
        name = f"{self.name}-{index}" + (f"-r{self.replaced}" if self.replaced else "")
        settings = QUICK_GROUP_SETTINGS | self.settings
        return WorkerProcess.start(name, self.kafka, settings, self.log_dir)

    def wait_ready(self, attempts: int = 3) -> None:
        """Until every member holds its share of the partitions, replacing stuck members."""
        share = self.partitions // len(self.workers) if self.partitions else None
        for _ in range(attempts):
            stuck = [i for i, w in enumerate(self.workers) if not ready(w, share)]
            if not stuck:
                return
            for index in stuck:
                self.workers[index].process.kill()
                self.workers[index].process.wait()
                self.replaced += 1
                self.workers[index] = self._worker(index)
        raise TimeoutError(f"workers of {self.name} not ready after {attempts} attempts")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def ready(worker: WorkerProcess, partitions: int | None) -> bool:
    """Whether ``worker`` holds its partitions within ``JOIN_TIMEOUT_S`` (else says why)."""
    try:
        worker.wait_ready(partitions, JOIN_TIMEOUT_S)
    except TimeoutError as exc:
        print(f"replacing worker {worker.name}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return False
    return True


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def mean_between(after: dict[str, float], before: dict[str, float], histogram: str) -> float:
    """Mean of a histogram's observations between two scrapes."""
    count = delta(after, before, f"{histogram}_count")
    return delta(after, before, f"{histogram}_sum") / count if count else 0.0


def children(pid: int) -> list[int]:
    """The running children of ``pid`` (started by any of its threads), from ``/proc``."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
