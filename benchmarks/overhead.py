"""What the worker costs beyond its model: one backlog, worker processes vs the model alone.

    python -m benchmarks.overhead [--articles 20000] [--repeats 3] [--processes 1 2]
        [--lane NAME:VAR=VALUE,VAR=VALUE ...] [--profile-seconds 0]

The model is the benchmarks' serving model, the ``fast`` profile trained on the Reuters
training split (trained once, about a minute, and cached), on 1 thread. Its shape with random
weights, which earlier rounds used, puts about 43 of the 95 labels in every prediction
against about 1.3 for a trained model, and the larger predictions cost the producer and the
results stage several times what real ones do. Each repeat scores the articles alone in this
process (the worker's ``Scorer``, full batches of 64: wall time and CPU time; once untimed
first, while the broker warms up), once per runtime the lanes
use (``TAGSTREAM_WORKER_RUNTIME`` of the lane; the CPU's default is ``onnx``), and a lane's
ratios are to the model alone on its own runtime; then, per lane and per
process count, starts ``python -m worker`` children in a fresh group on an empty topic of 4
partitions, waits until each holds its share, fills the topic with the backlog and times from
the first consumed message to the last result acknowledged (the workers' metrics, read every
0.1 s). Worker CPU is the user + system time from ``/proc`` over the same span of each worker
and the processes it started (an inference process, ``TAGSTREAM_WORKER_INFERENCE_PROCESS``);
model time inside the worker is its ``inference_seconds`` histogram; resident memory is
``VmRSS``, ``RssAnon`` and ``Pss`` at the end (steady state) and ``VmHWM``, each summed over
the worker and its children (``VmRSS`` counts shared library pages once per process, ``Pss``
splits them), and the worker's own ``VmRSS``. With one process, the worker's CPU over the span
is also split by thread (``/proc/PID/task``), each thread named by ``py-spy dump`` when py-spy
is found (``PY_SPY`` or the PATH): threads with no Python frames, such as a native library's
pool, show as ``native``. A lane adds environment variables to the
workers (a setting ``TAGSTREAM_WORKER_*``, or ``PYTHONPATH`` to run other code), so levers are
compared inside one run; lanes and repeats are interleaved. Figures are medians (min-max).
With ``--profile-seconds``, each lane then gets one more one-worker run, not counted, with
py-spy sampling it (``<lane>.1.profile.txt``): py-spy stops the process to read each sample,
which slowed the sampled run by a quarter or more, so it is kept out of the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.models import articles, renamed, serving_model
from benchmarks.streams import Topics, fill, kafka, messages
from benchmarks.workers import WorkerProcess, delta
from common.logging import configure
from model.inference import Classifier
from worker.inference import Scorer

BATCH = 64
POLL_S = 0.1


@dataclass(frozen=True)
class Alone:
    articles_per_s: float
    cpu_s_per_article: float
    model_s_per_article: float


@dataclass(frozen=True)
class Run:
    articles_per_s: float
    cpu_s_per_article: float
    model_s_per_article: float
    articles_per_batch: float
    rss_mib: float
    anon_mib: float
    pss_mib: float
    hwm_mib: float
    own_rss_mib: float
    """VmRSS of the worker's own process (the others include its inference process)."""
    threads: dict[str, float]
    """CPU seconds per article of each of the worker's threads (one process only)."""
    machine_cores_busy: float
    """Cores the whole machine kept busy over the span (``/proc/stat``), of ``os.cpu_count()``."""
    others_cpu_s_per_article: float
    """The machine's CPU outside the workers per article: the broker, this benchmark."""


def alone(model: Classifier, token_ids: list[list[int]]) -> Alone:
    scorer = Scorer(BATCH)
    batches = [token_ids[i : i + BATCH] for i in range(0, len(token_ids), BATCH)]
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        scorer.score(model, batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(token_ids)
    return Alone(n / wall, cpu / n, wall / n)


def vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss(pid: int) -> float:
    """Proportional set size, MiB: shared pages (torch's libraries) split among their users."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics(worker: WorkerProcess, attempts: int = 5) -> dict[str, float]:
    """The worker's metrics; a scrape that times out (a loaded machine) is tried again."""
    for _ in range(attempts - 1):
        try:
            return worker.metrics()
        except OSError as exc:
            print(f"scraping {worker.name} again: {exc}", file=sys.stderr)
    return worker.metrics()


def summed(workers: Sequence[WorkerProcess]) -> dict[str, float]:
    total: dict[str, float] = {}
    for worker in workers:
        for name, value in metrics(worker).items():
            total[name] = total.get(name, 0.0) + value
    return total


def done(metrics: dict[str, float]) -> float:
    return metrics.get("predictions_published_total", 0.0) + metrics.get("dead_letters_total", 0.0)


def through(
    topics: Topics,
    backlog: list[tuple[bytes, bytes]],
    settings: dict[str, str],
    env: dict[str, str],
    processes: int,
    log_dir: Path,
    profile_s: float,
    profile_dir: Path,
    tag: str,
) -> Run:
    source = topics.create(f"{tag}.in", partitions=4)
    settings = settings | {
        "input_topic": source,
        "output_topic": topics.create(f"{tag}.out", partitions=4),
        "dlq_topic": topics.create(f"{tag}.dlq"),
        "group_id": topics.name(f"{tag}.group"),
        "session_timeout_ms": "10000",
        "revoke_timeout_s": "5",
    }
    workers = [
        WorkerProcess.start(f"{tag}-{i}", topics.settings, settings, log_dir, env)
        for i in range(processes)
    ]
    try:
        for worker in workers:
            worker.wait_ready(4 // processes, timeout_s=120)
        fill(topics.settings, source, backlog)
        before = summed(workers)
        deadline = time.monotonic() + 600
        while summed(workers).get("messages_consumed_total", 0.0) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("nothing consumed")
            time.sleep(0.01)
        started, cpu = time.perf_counter(), sum(w.cpu_seconds() for w in workers)
        busy = machine_busy_s()
        first = thread_cpu(workers[0].process.pid)
        spy = profile(workers[0], profile_s, profile_dir / f"{tag}.txt") if profile_s else None
        while done(after := summed(workers)) < len(backlog):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done(after):.0f} of {len(backlog)} results")
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - started
        busy = machine_busy_s() - busy
        cpu = sum(w.cpu_seconds() for w in workers) - cpu
        last = thread_cpu(workers[0].process.pid)
        by_thread = by_name(first, last, workers[0].process.pid) if processes == 1 else {}
        if spy is not None:
            spy.wait(timeout=120)
        n = len(backlog)
        batches = delta(after, before, "batch_articles_count")
        return Run(
            articles_per_s=n / elapsed,
            cpu_s_per_article=cpu / n,
            model_s_per_article=delta(after, before, "inference_seconds_sum") / n,
            articles_per_batch=delta(after, before, "batch_articles_sum") / batches,
            rss_mib=max(sum(vm(p, "VmRSS") for p in w.pids()) for w in workers),
            anon_mib=max(sum(vm(p, "RssAnon") for p in w.pids()) for w in workers),
            pss_mib=max(sum(pss(p) for p in w.pids()) for w in workers),
            hwm_mib=max(sum(vm(p, "VmHWM") for p in w.pids()) for w in workers),
            own_rss_mib=max(vm(w.process.pid, "VmRSS") for w in workers),
            threads={name: seconds / len(backlog) for name, seconds in by_thread.items()},
            machine_cores_busy=busy / elapsed,
            others_cpu_s_per_article=(busy - cpu) / n,
        )
    finally:
        for worker in workers:
            worker.stop()


def machine_busy_s() -> float:
    """Seconds of CPU the whole machine has spent busy since boot (``/proc/stat``, all cores;
    idle and iowait excluded)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


THREAD = re.compile(r'^Thread (\d+) \(\w+\): "([^"]*)"', re.MULTILINE)


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from ``py-spy dump`` (empty without py-spy)."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if spy is None:
        return {}
    try:
        dump = subprocess.run(
            [spy, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(tid): name for tid, name in THREAD.findall(dump)}


def by_name(first: dict[int, float], last: dict[int, float], pid: int) -> dict[str, float]:
    """CPU seconds between two :func:`thread_cpu` readings, summed by thread name; kafka-python
    names its threads after the client id, so those names are shortened to their role."""
    names = thread_names(pid)
    out: dict[str, float] = {}
    for tid, seconds in last.items():
        name = names.get(tid, "native" if names else f"thread {tid}")
        if name.endswith("network-thread"):
            name = "producer network thread"
        elif name.startswith("kafka-io"):
            name = "consumer network thread (kafka-io)"
        out[name] = out.get(name, 0.0) + seconds - first.get(tid, 0.0)
    return {name: seconds for name, seconds in out.items() if seconds > 0}


def profile(worker: WorkerProcess, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (``PY_SPY`` or on the PATH) on ``worker`` for ``seconds``, raw stacks to ``out``."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if spy is None:
        print("py-spy not found: no profile", file=sys.stderr)
        return None
    command = [spy, "record", "--threads", "--format", "raw", "--rate", "200"]
    command += ["--duration", str(int(seconds)), "-o", str(out), "--pid", str(worker.process.pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


CATEGORIES = (
    ("model forward passes", ("network_scores", "OnnxRuntime.scores")),
    ("deciding labels", ("Classifier.decide", "decide_all", "decide_label_rows")),
    ("results (predictions, dead letters)", ("worker/results.py",)),
    ("encoding", ("model/encoder.py",)),
    ("decoding", ("worker/decoding.py",)),
    ("producer network thread", ("network-thread",)),
    ("delivery (send, callbacks, commit)", ("worker/delivery.py", "worker/offsets.py")),
    ("consumer, polling", ("messaging/consumer.py", "worker/source.py", "kafka-io")),
    ("metrics and health", ("prometheus_client", "process_request_thread", "common/health")),
)


WAITS = ("Condition.wait", "Event.wait", "select (", "socket.accept", "RdKafkaProducer._poll (")
"""Leaf frames of a thread that is waiting (py-spy counts some of them as active; librdkafka's
poll waits in C for outcomes, and the callbacks it runs show as deeper frames)."""


def summarise(raw: Path) -> list[tuple[str, float]]:
    """Shares of a py-spy ``raw`` profile's working samples (not waiting) by what they did."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        if not count.isdigit() or any(mark in leaf for mark in WAITS):
            continue
        name = next((c for c, marks in CATEGORIES if any(m in stack for m in marks)), "other")
        counts[name] = counts.get(name, 0) + int(count)
    total = sum(counts.values()) or 1
    return sorted(((name, n / total) for name, n in counts.items()), key=lambda x: -x[1])


def lane(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return name, env


def lane_runtime(env: dict[str, str]) -> str:
    """The runtime a lane's workers run on the CPU (``auto`` is ONNX Runtime there)."""
    runtime = env.get("TAGSTREAM_WORKER_RUNTIME", "auto")
    return "onnx" if runtime == "auto" else runtime


def table(rows: dict[str, list[float]], digits: int) -> str:
    def cell(values: list[float]) -> str:
        median = statistics.median(values)
        return f"{median:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"

    return "\n".join(f"| {name} | {cell(values)} |" for name, values in rows.items())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__)
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lane", action="append", default=[], help="NAME:VAR=VALUE,...")
    parser.add_argument("--profile-seconds", type=float, default=0.0)
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/tagstream-profiles"))
    parser.add_argument("--summarise", type=Path, help="only summarise this raw py-spy profile")
    args = parser.parse_args()
    if args.summarise:
        for name, share in summarise(args.summarise):
            print(f"| {name} | {share:.0%} |")
        return
    configure("WARNING")
    args.profile_dir.mkdir(parents=True, exist_ok=True)
    lanes = [lane(text) for text in args.lane] or [("default", {})]
    corpus_articles = [a for a in articles() if a.text.strip()]
    backlog_articles = renamed(corpus_articles, args.articles, "overhead")
    bench = serving_model(train=True)
    models = {
        runtime: bench.classifier(threads=1, runtime=runtime)  # type: ignore[arg-type]
        for runtime in sorted({lane_runtime(env) for _, env in lanes})
    }
    token_ids = next(iter(models.values())).encode([a.text for a in backlog_articles])
    load = os.getloadavg()[0]
    rows: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    with kafka() as settings, tempfile.TemporaryDirectory(prefix="tagstream-overhead-") as tmp:
        directory = Path(tmp)
        path = bench.write(directory)
        worker_settings = {"model_path": str(path), "hot_swap": "false", "threads": "1"}
        worker_settings |= {"device": "cpu", "log_level": "WARNING"}
        topics = Topics(settings)
        for model in models.values():  # untimed: the broker's JVM is still warming up
            alone(model, token_ids)
        for repeat in range(args.repeats):
            bases = {}
            for runtime, model in models.items():
                bases[runtime] = alone(model, token_ids)
                print(f"alone.{runtime}.{repeat}: {bases[runtime]}", file=sys.stderr, flush=True)
                note(f"model alone ({runtime}): articles/s", bases[runtime].articles_per_s)
                note(
                    f"model alone ({runtime}): CPU ms per article",
                    bases[runtime].cpu_s_per_article * 1000,
                )
            for name, env in lanes:
                base = bases[lane_runtime(env)]
                one = 0.0
                for processes in args.processes:
                    tag = f"{name}.{processes}.{repeat}"
                    key = f"{name}, {processes} process{'es' if processes > 1 else ''}"
                    run = through(
                        topics,
                        messages(renamed(backlog_articles, args.articles, tag)),
                        worker_settings,
                        env,
                        processes,
                        directory,
                        0.0,
                        args.profile_dir,
                        tag,
                    )
                    note(f"{key}: articles/s", run.articles_per_s)
                    note(f"{key}: vs model alone (wall)", run.articles_per_s / base.articles_per_s)
                    note(f"{key}: CPU ms per article", run.cpu_s_per_article * 1000)
                    note(
                        f"{key}: CPU per article vs model alone",
                        run.cpu_s_per_article / base.cpu_s_per_article,
                    )
                    note(
                        f"{key}: inference time per article vs alone",
                        run.model_s_per_article / base.model_s_per_article,
                    )
                    note(f"{key}: articles per batch", run.articles_per_batch)
                    note(f"{key}: machine cores busy", run.machine_cores_busy)
                    note(
                        f"{key}: CPU ms per article outside the workers",
                        run.others_cpu_s_per_article * 1000,
                    )
                    note(f"{key}: VmRSS at the end, MiB", run.rss_mib)
                    note(f"{key}: RssAnon at the end, MiB", run.anon_mib)
                    note(f"{key}: Pss at the end, MiB", run.pss_mib)
                    note(f"{key}: VmHWM, MiB", run.hwm_mib)
                    note(f"{key}: the worker's own VmRSS, MiB", run.own_rss_mib)
                    for thread, seconds in sorted(run.threads.items(), key=lambda t: -t[1]):
                        note(f"{key}: CPU ms per article, thread {thread}", seconds * 1000)
                    if processes == 1:
                        one = run.articles_per_s
                    elif one:
                        note(f"{key}: vs one process", run.articles_per_s / one)
                    print(f"{tag}: {run}", file=sys.stderr, flush=True)
            print(f"after repeat {repeat}:\n{table(rows, 2)}", file=sys.stderr, flush=True)
        if args.profile_seconds:
            for name, env in lanes:
                tag = f"{name}.1.profile"
                through(
                    topics,
                    messages(renamed(backlog_articles, args.articles, tag)),
                    worker_settings,
                    env,
                    1,
                    directory,
                    args.profile_seconds,
                    args.profile_dir,
                    tag,
                )
    print(
        f"{os.cpu_count()} cores, load average {load:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"model {bench.name}, {args.articles} articles, {args.repeats} repeats; "
        f"lanes {lanes}"
    )
    print("| measurement | median (min-max) |\n|---|---|")
    print(table(rows, 2))


if __name__ == "__main__":
    main()
