"""The retraining service: labelled articles in, gated model versions out.

One thread owns the Kafka consumer (:mod:`trainer.ingest`): it polls ``articles.labelled``, stores each batch in the
durable :class:`~trainer.store.ExampleStore` and only then commits the offsets, so a restart
loses nothing and stores nothing twice. When a cycle is due (enough new examples, or the
interval passed with at least one), a second thread trains under the Redis training lock on
the seed corpus plus the feedback, scores candidate and production on the same fixed holdout,
and publishes and promotes the candidate only if it is not worse by more than the margin than
the best of the alias's last ``gate_history`` versions (so quality cannot slide by the margin
every cycle). Publish and promote carry the lock's fencing token, which the registry checks
atomically, and the promote is a compare-and-set on the version the gate measured, so a
manual rollback during the cycle stands. The consumer keeps polling while a cycle trains.

The seed, validation and holdout splits and the feedback a cycle trains on are
:mod:`trainer.datasets`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import redis
from prometheus_client import REGISTRY

from common.health import HealthServer
from common.logging import get_logger
from common.settings import KafkaSettings, RedisSettings
from messaging import Consumer
from model.artifact import Artifact
from model.errors import AliasMovedError, FencedError, ModelError
from model.registry import Fence, Registry
from model.settings import RegistrySettings
from schemas import LabelledArticle
from trainer import ingest
from trainer.datasets import Datasets, feedback, jsonl_datasets, reuters_datasets
from trainer.errors import LockLostError
from trainer.evaluate import evaluate_artifact
from trainer.lock import TrainingLock, training_lock
from trainer.profiles import profile
from trainer.service_metrics import CYCLES, CycleResult, record_cycle
from trainer.settings import TrainerSettings
from trainer.store import ExampleStore
from trainer.train import RunOptions, train_model

log = get_logger("trainer")


@dataclass(frozen=True)
class Baseline:
    """What the gate compares a candidate with."""

    current: int | None
    """The version the alias held when measured: the promote's compare-and-set expects it."""
    scores: tuple[float, float] | None
    """Best micro-F1 and best macro-F1 over ``versions`` on the holdout (None: no model)."""
    versions: tuple[int, ...] = ()


def best_scores(scores: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """The best micro-F1 and the best macro-F1 among ``scores`` (None when empty)."""
    measured = list(scores)
    if not measured:
        return None
    return max(micro for micro, _ in measured), max(macro for _, macro in measured)


def holdout_scores(
    artifact: Artifact, articles: list[LabelledArticle], labels: list[str]
) -> tuple[float, float]:
    """(micro-F1, macro-F1) of the artifact's decisions on ``articles``, computed by
    :func:`trainer.evaluate.evaluate_artifact` (gold labels outside ``labels`` dropped)."""
    measured = evaluate_artifact(artifact, articles, labels)
    return measured["micro_f1"], measured["macro_f1"]


class TrainerService:
    """Consume, store, and retrain when due; see the module docstring."""

    def __init__(
        self,
        settings: TrainerSettings,
        kafka: KafkaSettings,
        redis_settings: RedisSettings,
        registry_settings: RegistrySettings,
        datasets: Datasets | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.redis_settings = redis_settings
        self.registry_settings = registry_settings
        self._datasets = datasets
        self.store = ExampleStore(settings.store_path)
        self._trained_sequence = self.store.sequence()
        self._last_cycle = time.monotonic()
        self._failures = 0
        self._retry_at = 0.0
        self._last_loop: float | None = None
        self._consumer: Consumer | None = None
        self._cycle: threading.Thread | None = None
        self._stopping = threading.Event()
        """Set by :meth:`run` when the service stops: ends a canary stage early."""
        self._canary_cut_short = False
        self._holdout_scores: dict[str, tuple[float, float]] = {}
        self.results: list[CycleResult] = []

    @property
    def datasets(self) -> Datasets:
        if self._datasets is None:
            path, fraction = self.settings.seed_path, self.settings.seed_fraction
            self._datasets = jsonl_datasets(path, fraction) if path else reuters_datasets(fraction)
        return self._datasets

    # --- consuming -------------------------------------------------------------------------

    def consumer(self) -> Consumer:
        """A consumer that starts each assigned partition where the store says."""
        return ingest.open_consumer(self.kafka, self.settings, self.store)

    def ingest(self, consumer: Consumer, timeout_ms: int = 500) -> int:
        """Poll once, store the batch, then commit; returns how many examples were new."""
        return ingest.ingest_batch(consumer, self.store, self.settings.max_body_bytes, timeout_ms)

    def drain(self, consumer: Consumer, idle_polls: int = 3) -> int:
        """Store everything available now: poll until ``idle_polls`` polls bring nothing."""
        return ingest.drain(consumer, self.store, self.settings.max_body_bytes, idle_polls)

    # --- deciding and training -------------------------------------------------------------

    def new_examples(self) -> int:
        return self.store.sequence() - self._trained_sequence

    def due(self) -> bool:
        """Enough new examples, or the interval passed with at least one new example.

        Never while backing off after a failed cycle (see :meth:`_failed`).
        """
        if time.monotonic() < self._retry_at:
            return False
        new = self.new_examples()
        waited = time.monotonic() - self._last_cycle
        return new >= self.settings.retrain_min_examples or (
            new > 0 and waited >= self.settings.retrain_interval_s
        )

    def cycle(self) -> CycleResult:
        """Train, evaluate against production on the holdout, publish and promote if not worse."""
        started = time.monotonic()
        sequence = self.store.sequence()
        log.info("cycle started", new_examples=sequence - self._trained_sequence)
        client = redis.Redis.from_url(
            self.redis_settings.url, **self.redis_settings.client_kwargs()
        )
        with ExitStack() as stack:
            stack.callback(client.close)
            lock = stack.enter_context(
                training_lock(client, self.redis_settings.namespace, self.settings.lock_ttl_s)
            )
            registry = Registry.from_settings(self.redis_settings, self.registry_settings)
            stack.callback(registry.close)
            result = self._train_and_gate(registry, lock, started)
        self._trained_sequence = sequence
        self._last_cycle = time.monotonic()
        return result

    def _train_and_gate(
        self, registry: Registry, lock: TrainingLock, started: float
    ) -> CycleResult:
        data = self.datasets
        examples = feedback(self.store.examples(), data)
        options = RunOptions(feedback_documents=len(examples))
        settings = profile(self.settings.profile).with_overrides(**self.settings.profile_overrides)
        artifact, _ = train_model(
            data.seed + examples, data.validation, data.labels, settings, options
        )
        candidate_f1, candidate_macro = holdout_scores(artifact, data.holdout, data.labels)
        baseline = self.production_baseline(registry, data)
        production = baseline.scores
        margin = self.settings.promotion_margin
        promote = passes_gate((candidate_f1, candidate_macro), production, margin)
        production_f1 = None if production is None else production[0]
        version = None
        reason = _reason(promote, (candidate_f1, candidate_macro), baseline, margin)
        moved = False
        if promote:
            if not lock.still_held():
                raise LockLostError("the training lock expired during the cycle; not publishing")
            fence = lock.fence()
            version, moved_reason = self.publish(registry, artifact, candidate_f1, fence, baseline)
            if moved_reason is not None:
                promote, moved, reason = False, not self._canary_cut_short, moved_reason
        return CycleResult(
            promote,
            reason,
            version,
            candidate_f1,
            production_f1,
            len(data.seed) + len(examples),
            len(examples),
            time.monotonic() - started,
            candidate_macro,
            None if production is None else production[1],
            moved,
        )

    def production_baseline(self, registry: Registry, data: Datasets) -> Baseline:
        """The alias's current version and the best holdout scores of it and the
        ``gate_history - 1`` versions it held before (those retention has deleted, or that no
        longer load, are left out with a warning; the current one must load)."""
        alias = self.settings.alias
        current = registry.aliases().get(alias)
        if current is None:
            return Baseline(None, None)
        earlier = list(dict.fromkeys(v for v in registry.history(alias) if v != current))
        measured = {current: self._scores_of(registry, current, data)}
        for version in earlier[: self.settings.gate_history - 1]:
            try:
                measured[version] = self._scores_of(registry, version, data)
            except ModelError as exc:
                log.warning("gate leaves out an earlier version", version=version, error=str(exc))
        return Baseline(current, best_scores(measured.values()), tuple(measured))

    def _scores_of(self, registry: Registry, version: int, data: Datasets) -> tuple[float, float]:
        """Holdout (micro, macro) of a published version, measured once per artifact."""
        manifest = registry.manifest(version)
        digest = manifest.artifact_sha256 or ""
        if digest not in self._holdout_scores:
            artifact = Artifact.from_bytes(registry.fetch(version), digest)
            self._holdout_scores[digest] = holdout_scores(artifact, data.holdout, data.labels)
        return self._holdout_scores[digest]

    def publish(
        self,
        registry: Registry,
        artifact: Artifact,
        holdout_f1: float,
        fence: Fence,
        baseline: Baseline,
    ) -> tuple[int, str | None]:
        """Publish and promote under ``fence``, the promote expecting ``baseline.current``.

        Returns the version and, when the alias moved meanwhile, why it was not promoted. A
        stale fence (the lock expired and another trainer took it) is a :class:`LockLostError`.
        """
        manifest = artifact.manifest.model_copy(
            update={"metrics": {**artifact.manifest.metrics, "holdout_micro_f1": holdout_f1}}
        )
        expected: int | Literal["unset"] = "unset" if baseline.current is None else baseline.current
        try:
            version = registry.publish(artifact.to_bytes(), manifest, fence=fence)
            if not self._canary_stage(registry, version, fence):
                return version, (
                    f"published version {version} not promoted: the service stopped during "
                    "its canary stage (it stays the canary)"
                )
            registry.promote(version, self.settings.alias, fence=fence, expected_current=expected)
        except FencedError as exc:
            raise LockLostError(f"fenced off by the registry: {exc}") from exc
        except AliasMovedError as exc:
            log.warning("promotion refused: the alias moved during the cycle", error=str(exc))
            return version, (
                f"published version {version} not promoted: {self.settings.alias} moved "
                f"during the cycle ({exc})"
            )
        return version, None

    def _canary_stage(self, registry: Registry, version: int, fence: Fence) -> bool:
        """Serve ``version`` as the canary for ``canary_s`` before it goes to production
        (workers shadow-score it meanwhile). False when the service stopped during the wait:
        a canary stage cut short promotes nothing."""
        if self.settings.canary_s <= 0 or self.settings.alias != "production":
            return True
        registry.promote(version, "canary", fence=fence)
        log.info("Canary stage started.", version=version, seconds=self.settings.canary_s)
        if self._stopping.wait(self.settings.canary_s):
            log.info("Canary stage cut short: the service is stopping.", version=version)
            self._canary_cut_short = True
            return False
        log.info("Canary stage over.", version=version)
        return True

    # --- running ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume and retrain until ``stop`` is set; a running cycle finishes first."""
        self._stopping = stop
        with ExitStack() as stack:
            if self.settings.metrics_port:
                health = HealthServer(
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                    REGISTRY,
                    self.alive,
                    self.ready,
                )
                stack.enter_context(health)
                log.info("health and metrics listening", port=health.port)
            consumer = self._consumer = self.consumer()
            try:
                while not stop.is_set():
                    self._last_loop = time.monotonic()
                    self.ingest(consumer)
                    if self.due() and not self._cycling():
                        self._cycle = threading.Thread(target=self._cycle_logged, name="cycle")
                        self._cycle.start()
            finally:
                if self._cycle is not None:
                    self._cycle.join()
                self._consumer = None
                consumer.close()
                self.store.close()

    def alive(self) -> tuple[bool, str]:
        """Liveness: the consume loop came round within ``stall_timeout_s``."""
        if self._last_loop is None:
            return True, "starting"
        quiet_s = time.monotonic() - self._last_loop
        return quiet_s < self.settings.stall_timeout_s, f"last poll {quiet_s:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        """Readiness: partitions assigned and the broker answering."""
        consumer = self._consumer
        partitions = len(consumer.assignment()) if consumer is not None else 0
        if consumer is not None and consumer.failing:
            return False, "polls are failing: the broker is not reachable"
        if not partitions:
            return False, "no partitions assigned"
        cycle = "a cycle is running" if self._cycling() else f"{self.new_examples()} new examples"
        return True, f"{partitions} partitions, {cycle}"

    def _cycling(self) -> bool:
        return self._cycle is not None and self._cycle.is_alive()

    def _cycle_logged(self) -> CycleResult | None:
        try:
            result = self.cycle()
        except LockLostError as exc:
            CYCLES.labels("skipped").inc()
            log.warning("cycle skipped", reason=str(exc))
            self._last_cycle = time.monotonic()
            self._failures, self._retry_at = 0, 0.0
            return None
        except Exception as exc:  # a failed cycle is reported; the service keeps consuming
            self._failed(exc)
            return None
        self._failures, self._retry_at = 0, 0.0
        record_cycle(result)
        self.results.append(result)
        return result

    def _failed(self, exc: Exception) -> None:
        """Count the failure and back off: doubling waits, a traceback only for the first.

        A cycle fails at once while Redis is away (its lock cannot be taken); without the
        wait the loop would retry, and log a traceback, as fast as it polls.
        """
        CYCLES.labels("failed").inc()
        self._failures += 1
        wait = min(
            self.settings.cycle_retry_initial_s * 2 ** (self._failures - 1),
            self.settings.cycle_retry_max_s,
        )
        self._last_cycle = time.monotonic()
        self._retry_at = self._last_cycle + wait
        fields = {"error": f"{type(exc).__name__}: {exc}", "failures_in_a_row": self._failures}
        if self._failures == 1:
            log.exception("cycle failed", retry_in_s=round(wait, 1), **fields)
        else:
            log.warning("cycle failed", retry_in_s=round(wait, 1), **fields)


def passes_gate(
    candidate: tuple[float, float], production: tuple[float, float] | None, margin: float
) -> bool:
    """Promote when there is no production model, or when the candidate's holdout micro-F1
    *and* macro-F1 are each no worse than production's by more than ``margin``."""
    if production is None:
        return True
    return all(mine >= theirs - margin for mine, theirs in zip(candidate, production, strict=True))


def _reason(
    promote: bool, candidate: tuple[float, float], baseline: Baseline, margin: float
) -> str:
    """Why the gate decided: micro- and macro-F1 must both be within ``margin`` of the best of
    the versions measured."""
    production = baseline.scores
    if production is None:
        return "no production model yet"
    parts = []
    for name, mine, theirs in zip(("micro", "macro"), candidate, production, strict=True):
        relation = ">=" if mine >= theirs - margin else "<"
        parts.append(f"{name} {mine:.4f} {relation} production {theirs:.4f} - margin {margin}")
    if len(baseline.versions) > 1:
        parts.append(f"production = best of versions {', '.join(map(str, baseline.versions))}")
    return "candidate " + ", ".join(parts)


def run_once(service: TrainerService) -> CycleResult:
    """Store what the topic holds now, run one cycle, and return its result."""
    consumer = service.consumer()
    try:
        service.drain(consumer)
    finally:
        consumer.close()
    result = service.cycle()
    record_cycle(result)
    return result
