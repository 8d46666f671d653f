"""The retraining service: labelled articles in, gated model versions out.

:class:`TrainerService` wires the stages and runs the cycle loop. One thread owns the Kafka
consumer and keeps polling (:mod:`trainer.ingest`: poll -> store -> commit) while a cycle
trains. When a cycle is due (enough new examples, or the interval passed with at least one),
a second thread runs it under the Redis training lock: train on the seed corpus plus the
feedback (:mod:`trainer.datasets`), decide on the holdout (:mod:`trainer.gate`), and, if the
candidate passes and the lock is still held, publish and promote it with the lock's fencing
token (:mod:`trainer.publish`). Every cycle ends in one log line and the metrics
(:mod:`trainer.service_metrics`); a failed cycle is retried after doubling waits.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import redis
from prometheus_client import REGISTRY

from common.health import HealthServer
from common.logging import get_logger
from common.settings import KafkaSettings, RedisSettings
from messaging import Consumer
from model.artifact import Artifact
from model.registry import Fence, Registry
from model.settings import RegistrySettings
from trainer import ingest, publish
from trainer.datasets import Datasets, feedback, jsonl_datasets, reuters_datasets
from trainer.errors import LockLostError
from trainer.gate import Baseline, Gate
from trainer.lock import TrainingLock, training_lock
from trainer.profiles import profile
from trainer.service_metrics import CYCLES, CycleResult, record_cycle
from trainer.settings import TrainerSettings
from trainer.store import ExampleStore
from trainer.train import RunOptions, train_model

log = get_logger("trainer")


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
        self.gate = Gate(settings)
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
        verdict = self.gate.judge(artifact, registry, data)
        (candidate_f1, candidate_macro), production = verdict.candidate, verdict.baseline.scores
        promote, reason, version, moved = verdict.promote, verdict.reason, None, False
        if promote:
            if not lock.still_held():
                raise LockLostError("the training lock expired during the cycle; not publishing")
            fence = lock.fence()
            version, moved_reason = self.publish(
                registry, artifact, candidate_f1, fence, verdict.baseline
            )
            if moved_reason is not None:
                promote, moved, reason = False, not self._canary_cut_short, moved_reason
        return CycleResult(
            promote,
            reason,
            version,
            candidate_f1,
            None if production is None else production[0],
            len(data.seed) + len(examples),
            len(examples),
            time.monotonic() - started,
            candidate_macro,
            None if production is None else production[1],
            moved,
        )

    def production_baseline(self, registry: Registry, data: Datasets) -> Baseline:
        """What the gate compares a candidate with: see :meth:`trainer.gate.Gate.baseline`."""
        return self.gate.baseline(registry, data)

    def publish(
        self,
        registry: Registry,
        artifact: Artifact,
        holdout_f1: float,
        fence: Fence,
        baseline: Baseline,
    ) -> tuple[int, str | None]:
        """Publish and promote under ``fence``, the promote expecting ``baseline.current``
        (see :mod:`trainer.publish`); a canary stage ends early when the service stops.

        Returns the version and, when it was not promoted, why. A stale fence (the lock
        expired and another trainer took it) is a :class:`LockLostError`.
        """
        published = publish.publish_and_promote(
            registry,
            artifact,
            holdout_f1,
            fence,
            baseline.current,
            settings=self.settings,
            stopping=self._stopping,
        )
        if published.canary_cut_short:
            self._canary_cut_short = True
        return published.version, published.not_promoted

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
