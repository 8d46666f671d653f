"""``tagstream demo``: the whole system on one machine, start to finish.

1. the local stack (Kafka + Redis) and the corpus;
2. a first model trained on half of the seed corpus (``--profile fast``; cached between runs),
   published and promoted to ``production``;
3. the trainer service and two worker processes;
4. the Reuters test split streamed into the input topic at ``--rate``; halfway, the other half
   of the seed corpus goes to the labelled topic, the trainer retrains, the new version serves
   as the canary for ``CANARY_S`` (the workers shadow-score it), is promoted, and the workers
   hot-swap;
5. beside them: shadow scoring with the ``canary`` alias in the workers, the live-quality
   monitor (gold labels of the streamed articles go to a topic of their own, so the trainer
   never learns from the test split) and a real Prometheus scraping all of them, with the
   project's alert rules loaded;
6. a live view; at the end, micro-F1 per model version, live quality, agreement and drift as
   the monitor and the workers measured them, sample predictions, where the logs and
   metrics are; then everything stops (also on Ctrl+C or SIGTERM), the stack too when this
   demo started it: a stack that was already running (``make stack-up``) is left running.

The trainer, the workers, the monitor, Prometheus and a stack the demo started never outlive
it: killed with SIGKILL, the demo cannot stop them itself, and the kernel sends each of them
SIGTERM instead (``common.lifeline``).

Every run uses its own topics, consumer group and registry namespace (``demo-<run>``), so
runs never see each other's data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

import corpus
from common.logging import configure
from common.paths import cache_dir
from common.ports import free_port
from common.settings import KafkaSettings, RedisSettings
from messaging import ensure_topics
from model.artifact import Artifact
from model.registry import Registry
from model.settings import RegistrySettings
from schemas import LabelledArticle
from tagstream import feed, prometheus
from tagstream.stack import LocalStack, StackSettings, StackState
from tagstream.supervisor import Supervisor, sigterm_raises
from tagstream.tally import Snapshot, Tally, micro_f1_by_version
from trainer.datasets import Datasets, reuters_datasets
from trainer.profiles import profile
from trainer.train import RunOptions, train_model

SEED_FRACTION = 0.5
CANARY_S = 20.0
"""How long a retrained version serves as the canary (shadow-scored) before production."""
WORKERS = 2
PROFILE_OVERRIDES = {"max_epochs": 4, "max_seconds": 900.0}
"""The fast profile bounded by epochs, not seconds: a busy machine must not cut training short
and make the retrained model look worse than it is."""


@dataclass(frozen=True)
class DemoRun:
    """Names and places of one demo run."""

    run_id: str
    directory: Path
    state: StackState

    @property
    def topics(self) -> dict[str, str]:
        prefix = f"demo-{self.run_id}"
        return {
            "input": f"{prefix}.articles",
            "output": f"{prefix}.predictions",
            "dlq": f"{prefix}.dlq",
            "labelled": f"{prefix}.labelled",
            "gold": f"{prefix}.gold",
            "shadow": f"{prefix}.shadow",
        }

    @property
    def namespace(self) -> str:
        return f"demo-{self.run_id}"

    @property
    def group_id(self) -> str:
        return f"demo-{self.run_id}-workers"

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
        return (
            base
            | {
                "TAGSTREAM_KAFKA_BOOTSTRAP": self.state.kafka_bootstrap,
                "TAGSTREAM_REDIS_URL": self.state.redis_url,
                "TAGSTREAM_REDIS_NAMESPACE": self.namespace,
                "TAGSTREAM_REGISTRY_CACHE_DIR": str(self.directory / "model-cache"),
                "PYTHONUNBUFFERED": "1",
            }
            | extra
        )


def run_demo(rate: float, limit: int | None, console: Console) -> None:
    """Run the demo described in the module docstring."""
    configure("WARNING")  # the live view speaks for this process; services log to files
    stack = LocalStack(StackSettings(), end_with_this_process=True)
    with ExitStack() as cleanup:
        cleanup.enter_context(sigterm_raises())
        console.rule("[bold]tagstream demo")
        state, started = stack.up()
        if started:
            cleanup.callback(_stop_stack, stack, console)
        corpus.fetch()
        run = DemoRun(
            uuid.uuid4().hex[:6], cache_dir() / "demo" / time.strftime("%Y%m%d-%H%M%S"), state
        )
        run.directory.mkdir(parents=True, exist_ok=True)
        console.print(
            f"stack: Kafka {state.kafka_bootstrap}, Redis {state.redis_url}; "
            f"run {run.run_id}, logs in {run.directory}"
        )
        kafka = KafkaSettings(bootstrap=state.kafka_bootstrap)
        ensure_topics(
            kafka,
            {
                run.topics["input"]: 4,
                run.topics["output"]: 4,
                run.topics["dlq"]: 1,
                run.topics["labelled"]: 1,
                run.topics["gold"]: 1,
                run.topics["shadow"]: 4,
            },
        )
        datasets = reuters_datasets(SEED_FRACTION)
        _publish_first_model(run, datasets, console)
        feedback = _feedback_articles(datasets)
        cleanup.callback(console.print, "stopped the workers and the trainer")
        supervisor = cleanup.enter_context(Supervisor(run.directory))
        ports = _start_services(run, supervisor, len(feedback))
        tally = Tally(
            kafka,
            predictions_topic=run.topics["output"],
            dlq_topic=run.topics["dlq"],
            input_topic=run.topics["input"],
            group_id=run.group_id,
        ).start()
        cleanup.callback(tally.stop)
        test = corpus.load().test[:limit]
        producer = _Producer(kafka, run, ports["trainer"], test=test, feedback=feedback, rate=rate)
        producer.start()
        _live(console, tally, producer, supervisor, total=len(test))
        _summary(console, tally, test, datasets.labels, run=run, ports=ports)


def _publish_first_model(run: DemoRun, datasets: Datasets, console: Console) -> int:
    path = _initial_model_path()
    if path.is_file():
        console.print(f"first model: reusing {path}")
        data = path.read_bytes()
    else:
        console.print(
            f"first model: training on {len(datasets.seed)} articles "
            "(--profile fast, about 2 minutes on 2 cores)"
        )
        settings = profile("fast").with_overrides(**PROFILE_OVERRIDES)
        artifact, _ = train_model(
            datasets.seed, datasets.validation, datasets.labels, settings, RunOptions(progress=True)
        )
        data = artifact.to_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    artifact = Artifact.from_bytes(data)
    redis_settings = RedisSettings(url=run.state.redis_url, namespace=run.namespace)
    with Registry.from_settings(redis_settings, RegistrySettings()) as registry:
        version = registry.publish(data, artifact.manifest)
        registry.promote(version, "production")
    console.print(f"first model: published as version {version} and promoted to production")
    return version


def _initial_model_path() -> Path:
    """Cached first model, keyed on the code that trains it and the seed fraction."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(json.dumps([SEED_FRACTION, PROFILE_OVERRIDES]).encode())
    for source in sorted([*root.glob("model/*.py"), *root.glob("trainer/*.py")]):
        digest.update(source.read_bytes())
    return cache_dir() / "demo" / f"first-model-{digest.hexdigest()[:16]}.safetensors"


def _start_services(run: DemoRun, supervisor: Supervisor, feedback_size: int) -> dict[str, int]:
    tagstream = [sys.executable, "-m", "tagstream"]
    ports = {"trainer": free_port(), "monitor": free_port()}
    ports |= {f"worker-{i}": free_port() for i in range(WORKERS)}
    supervisor.start(
        "trainer",
        [*tagstream, "trainer", "serve"],
        run.env(
            TAGSTREAM_TRAINER_TOPIC=run.topics["labelled"],
            TAGSTREAM_TRAINER_GROUP_ID=f"demo-{run.run_id}-trainer",
            TAGSTREAM_TRAINER_STORE_PATH=str(run.directory / "trainer-store.db"),
            TAGSTREAM_TRAINER_SEED_FRACTION=str(SEED_FRACTION),
            TAGSTREAM_TRAINER_RETRAIN_MIN_EXAMPLES=str(feedback_size),
            TAGSTREAM_TRAINER_METRICS_PORT=str(ports["trainer"]),
            TAGSTREAM_TRAINER_PROFILE_OVERRIDES=json.dumps(PROFILE_OVERRIDES),
            TAGSTREAM_TRAINER_CANARY_S=str(CANARY_S),
        ),
    )
    for i in range(WORKERS):
        supervisor.start(
            f"worker-{i}",
            [*tagstream, "worker", "run"],
            run.env(
                TAGSTREAM_WORKER_INPUT_TOPIC=run.topics["input"],
                TAGSTREAM_WORKER_OUTPUT_TOPIC=run.topics["output"],
                TAGSTREAM_WORKER_DLQ_TOPIC=run.topics["dlq"],
                TAGSTREAM_WORKER_GROUP_ID=run.group_id,
                TAGSTREAM_WORKER_WORKER_ID=f"worker-{i}",
                TAGSTREAM_WORKER_METRICS_PORT=str(ports[f"worker-{i}"]),
                TAGSTREAM_WORKER_SHADOW_ALIAS="canary",
                TAGSTREAM_WORKER_SHADOW_TOPIC=run.topics["shadow"],
            ),
        )
    supervisor.start(
        "monitor",
        [*tagstream, "monitor", "run"],
        run.env(
            TAGSTREAM_MONITOR_PREDICTIONS_TOPIC=run.topics["output"],
            TAGSTREAM_MONITOR_LABELLED_TOPIC=run.topics["gold"],
            TAGSTREAM_MONITOR_SHADOW_TOPIC=run.topics["shadow"],
            TAGSTREAM_MONITOR_START="beginning",
            TAGSTREAM_MONITOR_METRICS_PORT=str(ports["monitor"]),
        ),
    )
    ports["prometheus"] = free_port()
    config = prometheus.write_config(
        run.directory / "prometheus", {name: port for name, port in ports.items()}
    )
    supervisor.start(
        "prometheus",
        prometheus.argv(config, ports["prometheus"], run.directory / "prometheus" / "data"),
        run.env(),
    )
    return ports


def _feedback_articles(datasets: Datasets) -> list[LabelledArticle]:
    """The seed-pool articles the first model never saw: the labelled feedback."""
    seen = {a.id for a in datasets.seed} | {a.id for a in datasets.holdout}
    seen |= {a.id for a in datasets.validation}
    return [a for a in corpus.load().train if a.id not in seen]


def trainer_status(port: int) -> dict[str, float]:
    """Finished cycles by outcome, and examples stored, from the trainer's ``/metrics``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return {}
    status: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tagstream_trainer_cycles_total":
                status[sample.labels["outcome"]] = sample.value
            elif sample.name == "tagstream_trainer_examples_stored_total":
                status["stored"] = sample.value
    return status


def cycles_finished(status: dict[str, float]) -> int:
    return int(sum(status.get(k, 0) for k in ("promoted", "rejected", "failed", "skipped")))


class _Producer(threading.Thread):
    """Streams the test split with the feedback halfway (see the module docstring).

    The last fifth of the test split waits for the trainer's first cycle: its first half goes
    out once the new version is the canary (the workers shadow-score it), the second once the
    cycle has ended (the workers have swapped to the promoted version).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        run: DemoRun,
        trainer_port: int,
        *,
        test: list[LabelledArticle],
        feedback: list[LabelledArticle],
        rate: float,
    ) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.kafka, self.demo, self.trainer_port = kafka, run, trainer_port
        self.test, self.feedback, self.rate = test, feedback, rate
        self.sent = 0
        self.feedback_sent = 0
        self.waiting = False
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            half, held = len(self.test) // 2, len(self.test) - len(self.test) // 5
            self._send(self.test[:half])
            self.feedback_sent = feed.produce(
                self.kafka, self.demo.topics["labelled"], self.feedback
            )
            self._send(self.test[half:held])
            canary = held + (len(self.test) - held) // 2
            self._wait_for_cycle(timeout_s=900, until_canary=True)
            self._send(self.test[held:canary])  # shadow-scored by the canary
            self._wait_for_cycle(timeout_s=900, until_canary=False)
            self._send(self.test[canary:])  # served by the promoted version
        except Exception as exc:  # reported by the live view, which then stops the demo
            self.error = exc

    def _wait_for_cycle(self, timeout_s: float, *, until_canary: bool) -> None:
        """Until the trainer's cycle ends, or (``until_canary``) its new version goes to the
        canary alias, so what is sent next is shadow-scored during the canary stage."""
        self.waiting = True
        deadline = time.monotonic() + timeout_s
        redis_settings = RedisSettings(url=self.demo.state.redis_url, namespace=self.demo.namespace)
        with Registry.from_settings(redis_settings, RegistrySettings()) as registry:
            while not cycles_finished(trainer_status(self.trainer_port)):
                canary_set = until_canary and "canary" in registry.aliases()
                if time.monotonic() > deadline or canary_set:
                    break
                time.sleep(1.0)
        self.waiting = False

    def _send(self, articles: list[LabelledArticle]) -> None:
        """Each second's chunk to the input topic, then its gold labels to the monitor's topic
        (as editors' labels arrive after the article; the trainer never sees these)."""
        for chunk in _chunks(articles, max(1, int(self.rate))):
            started = time.monotonic()
            self.sent += feed.produce(
                self.kafka, self.demo.topics["input"], (feed.unlabelled(a) for a in chunk)
            )
            feed.produce(self.kafka, self.demo.topics["gold"], chunk)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def _chunks(items: list[LabelledArticle], size: int) -> Iterator[list[LabelledArticle]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _live(
    console: Console,
    tally: Tally,
    producer: _Producer,
    supervisor: Supervisor,
    *,
    total: int,
    timeout_s: float = 1500.0,
) -> None:
    deadline = time.monotonic() + timeout_s
    with Live(console=console, refresh_per_second=2) as live:
        while time.monotonic() < deadline:
            snap = tally.snapshot()
            live.update(_view(snap, producer, trainer_status(producer.trainer_port), total))
            if producer.error is not None:
                raise producer.error
            if supervisor.failed():
                names = ", ".join(c.name for c in supervisor.failed())
                raise RuntimeError(f"{names} exited; see the logs in {supervisor.log_dir}")
            if snap.predicted + snap.dead_letters >= total and not producer.is_alive():
                return
            time.sleep(0.5)
    console.print("[yellow]timed out waiting for every prediction")


def _view(snap: Snapshot, producer: _Producer, trainer: dict[str, float], total: int) -> Group:
    counters = Table.grid(padding=(0, 3))
    cycles = ", ".join(f"{k} {int(v)}" for k, v in trainer.items() if k != "stored") or "none yet"
    for name, value in (
        (
            "produced",
            f"{producer.sent}/{total}"
            + (
                " (holding the rest for the trainer's canary stage or promotion)"
                if producer.waiting
                else ""
            ),
        ),
        ("trainer", f"{int(trainer.get('stored', 0))} examples stored; cycles: {cycles}"),
        ("feedback sent", str(producer.feedback_sent)),
        ("predicted", str(snap.predicted)),
        ("dead letters", str(snap.dead_letters)),
        ("lag", "?" if snap.lag is None else str(snap.lag)),
        ("throughput", f"{snap.rate:.1f} articles/s"),
    ):
        counters.add_row(name, value)
    workers = Table("worker", "predicted", "model version", title="workers")
    for worker, count in sorted(snap.per_worker.items()):
        workers.add_row(worker, str(count), str(snap.worker_version.get(worker, "?")))
    return Group(Panel(counters, title="stream"), workers)


def _summary(
    console: Console,
    tally: Tally,
    test: list[LabelledArticle],
    labels: list[str],
    *,
    run: DemoRun,
    ports: dict[str, int],
) -> None:
    gold = {a.id: a.labels for a in test}
    quality = Table(
        "model version",
        "articles",
        "micro-F1",
        title="quality of the streamed predictions (output topic: every article, as served)",
    )
    for version, (count, f1) in micro_f1_by_version(tally.predictions, gold, labels).items():
        quality.add_row(str(version), str(count), f"{f1:.3f}")
    console.print(quality)
    samples = Table("article", "gold", "predicted (score)", "version", title="sample predictions")
    for article in test[:: max(1, len(test) // 5)][:5]:
        prediction = tally.predictions.get(article.id)
        if prediction is not None:
            guessed = ", ".join(f"{x.name} ({x.score:.2f})" for x in prediction.labels)
            samples.add_row(
                article.title[:48],
                ", ".join(article.labels),
                guessed or "-",
                str(prediction.model_version),
            )
    console.print(samples)
    snap = tally.snapshot()
    console.print(
        f"predicted {snap.predicted} (duplicates {snap.duplicates}), dead letters "
        f"{snap.dead_letters}, of {len(test)} produced"
    )
    _live_quality(console, ports)
    for name, port in ports.items():
        path = "/graph" if name == "prometheus" else "/metrics"
        console.print(
            f"{name}: was at http://127.0.0.1:{port}{path}, log {run.directory / (name + '.log')}"
        )


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every sample a service's ``/metrics`` shows now (empty when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return []
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _live_quality(console: Console, ports: dict[str, int]) -> None:
    """The monitor's figures per version, the workers' shadow agreement and input drift, and
    what Prometheus scraped."""
    monitor: dict[str, dict[str, float]] = {}
    for name, labels, value in scrape(ports["monitor"]):
        if "version" in labels and "label" not in labels and "other" not in labels:
            monitor.setdefault(labels["version"], {})[name] = value
    table = Table(
        "model version",
        "labelled",
        "live micro-F1",
        "live macro-F1",
        "output PSI",
        title="live quality (tagstream monitor: gold labels joined with predictions)",
        caption=(
            "each version's last labelled articles, served or scored as the canary's shadow:"
            " a version that was a canary first is measured on other articles than above"
        ),
    )
    for version, figures in sorted(monitor.items(), key=lambda item: int(item[0])):
        table.add_row(
            version,
            f"{figures.get('tagstream_monitor_window_articles', 0):.0f}",
            f"{figures.get('tagstream_monitor_live_micro_f1', 0):.3f}",
            f"{figures.get('tagstream_monitor_live_macro_f1', 0):.3f}",
            f"{figures.get('tagstream_monitor_output_psi', float('nan')):.3f}",
        )
    console.print(table)
    totals: dict[str, float] = {}
    for name, port in ports.items():
        if name.startswith("worker-"):
            for metric, _, value in scrape(port):
                totals[metric] = totals.get(metric, 0.0) + value
    shadowed = totals.get("tagstream_worker_shadow_articles_total", 0.0)
    agreed = totals.get("tagstream_worker_shadow_agreements_total", 0.0)
    tokens = totals.get("tagstream_worker_tokens_total", 0.0)
    unknown = totals.get("tagstream_worker_unknown_tokens_total", 0.0)
    console.print(
        f"shadow scoring (canary beside production): {shadowed:.0f} articles, "
        + (
            f"{agreed / shadowed:.1%} with the same labels as production"
            if shadowed
            else "none (no canary while the stream ran)"
        )
        + f"; input drift: {unknown / tokens if tokens else 0:.1%} of tokens unknown"
    )
    for metric, _, value in scrape(ports["monitor"]):
        if metric == "tagstream_monitor_rollbacks_total" and value:
            console.print(f"[yellow]the monitor rolled production back {value:.0f} time(s)")
    up = prometheus.query(ports["prometheus"], "up")
    firing = prometheus.query(ports["prometheus"], 'ALERTS{alertstate="firing"}')
    console.print(
        f"prometheus: {sum(1 for r in up if r['value'][1] == '1')}/{len(up)} targets up, "
        f"{len(firing)} alert(s) firing"
        + (": " + ", ".join(sorted({r["metric"]["alertname"] for r in firing})) if firing else "")
    )


def _stop_stack(stack: LocalStack, console: Console) -> None:
    stack.down()
    console.print("stopped the local stack this demo started")
