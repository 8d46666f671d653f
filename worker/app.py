"""One worker process: resources composed in one ExitStack, signals, the loop, a summary.

Start-up order: signal handlers -> health server (``/healthz`` answers at once, ``/readyz``
once a model is loaded and partitions are assigned) -> the first model (waits while there is
none) -> the alias watcher and swapper -> producer (``init_transactions`` fences a
predecessor) -> consumer -> the loop. The ExitStack closes them in reverse: the consumer
leaves the group first, then the producer flushes and closes, then the rest.

Signals flip a flag: the first SIGTERM or SIGINT starts a graceful drain, a second one exits
at once. The last log line summarises the counters.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType, TracebackType
from typing import Any, Self

import structlog

from common.health import HealthServer
from common.logging import configure, get_logger
from common.settings import KafkaSettings, RedisSettings, load
from messaging import DeadlineError, Producer
from messaging.admin import admin
from model.inference import resolve_device
from model.settings import RegistrySettings
from worker.errors import WorkerError
from worker.inference import Scorer
from worker.metrics import Metrics
from worker.models import RegistryModels, first_model, open_models
from worker.offload import InferenceProcess
from worker.pipeline import Pipeline
from worker.settings import WorkerSettings
from worker.shadow import ShadowSlot
from worker.sink import open_sink
from worker.source import open_source
from worker.supervisor import supervise
from worker.swap import ModelSlot, RetryPolicy, Swapper

log = get_logger("worker.app")

CLOSE_TIMEOUT_S = 10.0
"""The longest the producer's close may flush (less once a drain deadline is near)."""


class Signals:
    """SIGTERM/SIGINT: the first calls ``stop`` (a graceful drain), a second exits now."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._seen = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._seen:
            log.warning("second signal: exiting now", signal=name)
            os._exit(128 + signum)
        self._seen = True
        log.info("signal: draining, a second one exits at once", signal=name)
        self._stop()


class Worker:
    """Everything one worker process runs; :meth:`run` returns when it has stopped."""

    def __init__(
        self,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        redis: RedisSettings,
        registry: RegistrySettings,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.redis = redis
        self.registry = registry
        self.worker_id = settings.resolved_worker_id()
        self.metrics = Metrics()
        self.slot = ModelSlot(self.metrics)
        self.pipeline: Pipeline | None = None
        self.shadow_slot: ShadowSlot | None = None
        self.swapper: Swapper | None = None
        self.offload: InferenceProcess | None = None
        self.health_port: int | None = None
        self.stopping = threading.Event()
        self.halt = threading.Event()
        """Ends the stages and every wait of the producer (set when the drain is over)."""
        self._started = time.monotonic()

    def stop(self) -> None:
        """Drain and stop (what the first SIGTERM/SIGINT does); safe from any thread."""
        self.stopping.set()
        if self.pipeline is not None:
            self.pipeline.stop()
        else:  # nothing to drain yet: ends a wait for init_transactions at once
            self.halt.set()

    def run(self) -> None:
        structlog.contextvars.bind_contextvars(worker_id=self.worker_id)
        log.info(
            "worker starting",
            group_id=self.settings.group_id,
            input_topic=self.settings.input_topic,
            processing_guarantee=self.settings.processing_guarantee,
            producer_backend=self.kafka.producer_backend,
            device=resolve_device(self.settings.device),
            runtime=self.settings.runtime,
        )
        try:
            with ExitStack() as stack:
                self._run(stack)
        finally:
            log.info("worker stopped", **self.summary())

    def _run(self, stack: ExitStack) -> None:
        stack.enter_context(Signals(self.stop))
        if self.settings.metrics_port is not None:
            health = stack.enter_context(
                HealthServer(
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                    self.metrics.registry,
                    self.alive,
                    self.ready,
                )
            )
            self.health_port = health.port
            log.info("health and metrics listening", port=health.port)
        self.offload = self._offload(stack)
        models = open_models(self.settings, self.redis, self.registry, self.offload)
        stack.callback(models.close)
        model = first_model(models, self.stopping)
        if model is None:
            return
        self.slot.install(model)
        if self.settings.hot_swap:
            swapper = self.swapper = Swapper(
                self.slot,
                models.version,
                self.metrics,
                retry=RetryPolicy(
                    self.settings.model_load_attempts,
                    self.settings.model_retry_initial_s,
                    self.settings.model_retry_max_s,
                ),
                behind_after_s=self.settings.model_behind_alias_s,
            )
            swapper.start()
            stack.callback(swapper.stop)
            models.watch(swapper, model.version)
        check_topics(self.kafka, self.settings)
        shadow, shadow_sink = self._shadow(stack)
        try:
            sink = open_sink(self.kafka, self.settings, self.worker_id, self.halt)
        except DeadlineError:
            if self.stopping.is_set():
                return
            raise
        stack.callback(lambda: sink.close(min(CLOSE_TIMEOUT_S, self._time_left() or math.inf)))
        source = open_source(self.kafka, self.settings, self.worker_id)
        stack.callback(lambda: source.close(self._time_left()))
        self.pipeline = Pipeline(
            self.settings,
            source,
            sink,
            slot=self.slot,
            metrics=self.metrics,
            scorer=self.scorer(),
            worker_id=self.worker_id,
            halt=self.halt,
            shadow=shadow,
            shadow_sink=shadow_sink,
        )
        if self.stopping.is_set():
            return
        self.pipeline.run()

    def _shadow(self, stack: ExitStack) -> tuple[ShadowSlot | None, Producer | None]:
        """The shadow model's slot, following the shadow alias, and the producer for its
        records; (None, None) when shadow scoring is off."""
        alias = self.settings.shadow_alias
        if alias is None:
            return None, None
        models = RegistryModels(
            self.settings.model_copy(update={"model_alias": alias}),
            self.redis,
            self.registry,
            self.offload,
        )
        stack.callback(models.close)
        self.shadow_slot = slot = ShadowSlot(models.version, self.metrics).start()
        stack.callback(slot.stop)
        models.watch_alias(alias, slot.want)
        sink = None
        if self.settings.shadow_topic is not None:
            sink = Producer(self.kafka, client_id=f"{self.kafka.client_id}-{self.worker_id}-shadow")
            stack.callback(lambda: sink.close(min(CLOSE_TIMEOUT_S, self._time_left() or math.inf)))
        log.info("Shadow scoring on.", alias=alias, topic=self.settings.shadow_topic)
        return slot, sink

    def _offload(self, stack: ExitStack) -> InferenceProcess | None:
        """The inference process, when the settings ask for one; closed last, after the
        pipeline has drained."""
        if not self.settings.inference_process:
            return None
        process = InferenceProcess(
            device=self.settings.device,
            threads=self.settings.threads,
            timeout_s=self.settings.inference_timeout_s,
            runtime=self.settings.runtime,
            log_level=self.settings.log_level,
            on_restart=self.metrics.inference_process_restarts.inc,
        )
        stack.callback(process.close)
        return process

    def _time_left(self) -> float | None:
        """What a close may take of the drain deadline (None: no drain began; see
        :meth:`Pipeline.time_left`)."""
        return self.pipeline.time_left() if self.pipeline is not None else None

    def scorer(self) -> Scorer:
        on_cpu = resolve_device(self.settings.device) == "cpu"
        return Scorer(self.settings.bucket_size if on_cpu else None)

    # -- health -----------------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        pipeline = self.pipeline
        if pipeline is None:
            return True, "starting"
        now = time.monotonic()
        quiet_s = now - pipeline.last_step
        busy_s = max(
            now - (stage.busy_since or now) for stage in (pipeline.scoring, pipeline.delivery)
        )
        limit_s = self.settings.max_poll_interval_ms / 1000
        detail = f"last poll {quiet_s:.1f} s ago, current batch running {busy_s:.1f} s"
        if pipeline.undecodable:
            held = ", ".join(str(error) for error in pipeline.undecodable.values())
            return False, f"{detail}; undecodable: {held}"
        if pipeline.breaker.is_open():
            return False, f"{detail}; {pipeline.breaker.describe()}"
        return quiet_s < limit_s and busy_s < limit_s, detail

    def ready(self) -> tuple[bool, str]:
        version = self.slot.version
        if version is None:
            return False, "no model loaded"
        behind = model_behind(self.swapper, version, self.settings)
        if behind is not None:
            return False, behind
        pipeline = self.pipeline
        partitions = pipeline.tracker.partitions() if pipeline else set()
        if not partitions:
            return False, f"model {version} loaded, no partitions assigned"
        return True, f"model {version}, {len(partitions)} partitions"

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "consumed": total(m.consumed),
            "predictions": total(m.predictions),
            "dead_letters": total(m.dead_letters),
            "discarded": total(m.discarded),
            "batches": total(m.batches),
            "commits": total(m.commits),
            "transactions": total(m.transactions),
            "rewinds": total(m.rewinds),
            "model_swaps": total(m.model_swaps),
            "model_refusals": total(m.model_refusals),
            "model_version": self.slot.version,
            "uptime_s": round(time.monotonic() - self._started, 1),
        }


def model_behind(swapper: Swapper | None, version: int, settings: WorkerSettings) -> str | None:
    """Why readiness fails because the model serving has not been the alias's for longer
    than ``model_behind_alias_s``; None while it is, or not for that long."""
    behind_s = swapper.behind_s() if swapper is not None else None
    if swapper is None or behind_s is None or behind_s < settings.model_behind_alias_s:
        return None
    wanted = swapper.wanted
    refusal = swapper.refusal(wanted) if wanted is not None else None
    state = f"refused until the next promote: {refusal}" if refusal else "still failing to load"
    return (
        f"serving model {version}, but {settings.model_alias} has pointed at {wanted} for "
        f"{behind_s:.0f} s ({state})"
    )


def check_topics(kafka: KafkaSettings, settings: WorkerSettings) -> None:
    """Fail at start, with the names, when a topic the worker needs does not exist."""
    wanted = {settings.input_topic, settings.output_topic, settings.dlq_topic}
    with admin(kafka) as client:
        missing = wanted - client.list_topics()
    if missing:
        raise WorkerError(
            f"topics missing on {kafka.bootstrap}: {', '.join(sorted(missing))}; "
            "create them with `tagstream topics create` (the broker does not auto-create topics)"
        )


def total(metric: Any) -> int:
    """The sum of a counter over all its labels."""
    return int(
        sum(
            sample.value
            for family in metric.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
    )


def main(processes: int = 1) -> int:
    """Load the settings, then run one worker here or supervise ``processes`` of them."""
    settings = load(WorkerSettings)
    configure(settings.log_level)
    if settings.switch_interval_ms is not None:
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
    if processes > 1:
        return supervise(settings, processes)
    Worker(settings, load(KafkaSettings), load(RedisSettings), load(RegistrySettings)).run()
    return 0
