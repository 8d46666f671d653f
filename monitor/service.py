"""The monitor's loop: read predictions and feedback, keep the figures, serve them, act.

One read_committed reader without a consumer group follows the predictions topic (and the
shadow topic when set) and the labelled topic. Every ``check_interval_s`` the figures go to
the Prometheus gauges and the rollback rules are asked about the production alias and the
version it replaced; a verdict rolls the alias back (compare-and-set on the version judged,
so an operator's promote in between is never overwritten) and says why in a log line. A
version is rolled back at most once per monitor process: promoting it again by hand is an
operator's decision the monitor respects.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from common.health import HealthServer
from common.logging import get_logger
from common.settings import KafkaSettings, RedisSettings
from messaging import MessagingError, Record
from messaging.consumer import Reader
from model.errors import ModelError
from model.registry import Registry
from model.settings import RegistrySettings
from monitor.drift import LabelMix, psi
from monitor.quality import Agreement, Join
from monitor.rollback import Verdict, judge
from monitor.settings import MonitorSettings
from schemas import Prediction, decode_labelled_article

log = get_logger("monitor")

PREFIX = "tagstream_monitor"
POLL_MS = 200


class MonitorMetrics:
    """Every metric the monitor exports, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        by_version = ["version"]
        self.micro_f1 = Gauge(
            f"{PREFIX}_live_micro_f1", "Rolling live micro-F1", by_version, registry=r
        )
        self.macro_f1 = Gauge(
            f"{PREFIX}_live_macro_f1", "Rolling live macro-F1", by_version, registry=r
        )
        self.precision = Gauge(
            f"{PREFIX}_live_precision", "Rolling live precision", ["version", "label"], registry=r
        )
        self.recall = Gauge(
            f"{PREFIX}_live_recall", "Rolling live recall", ["version", "label"], registry=r
        )
        self.window = Gauge(
            f"{PREFIX}_window_articles",
            "Labelled articles in a version's window",
            by_version,
            registry=r,
        )
        self.joined = Counter(
            f"{PREFIX}_joined", "Predictions joined with their labels", by_version, registry=r
        )
        self.agreement = Gauge(
            f"{PREFIX}_agreement",
            "Share of articles two versions gave the same label set",
            ["version", "other"],
            registry=r,
        )
        self.flips = Counter(
            f"{PREFIX}_label_flips",
            "Articles on which two versions disagree about a label",
            ["version", "other", "label"],
            registry=r,
        )
        self.psi = Gauge(
            f"{PREFIX}_output_psi",
            "Population stability index of predicted labels against the training priors",
            by_version,
            registry=r,
        )
        self.rollbacks = Counter(
            f"{PREFIX}_rollbacks", "Automatic rollbacks of the production alias", registry=r
        )
        self.pending = Gauge(
            f"{PREFIX}_pending", "Halves waiting for their other half", ["side"], registry=r
        )
        self.bad_records = Counter(
            f"{PREFIX}_bad_records",
            "Records that could not be read, by topic",
            ["topic"],
            registry=r,
        )


class Monitor:
    """Follows the topics, keeps the live figures, rolls production back on a verdict."""

    def __init__(
        self,
        settings: MonitorSettings,
        kafka: KafkaSettings,
        redis: RedisSettings,
        registry: RegistrySettings,
    ) -> None:
        self.settings = settings
        self._kafka = kafka
        self._registry = Registry.from_settings(redis, registry)
        self.join = Join(window=settings.window, max_pending=settings.max_pending)
        self.agreement = Agreement(window=settings.window, max_pending=settings.max_pending)
        self.mix = LabelMix(settings.window)
        self.metrics = MonitorMetrics()
        self.verdicts: list[Verdict] = []
        self._acted: set[int] = set()
        self._priors: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        self._last_error: str | None = None
        self.port: int | None = None
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # -- records ----------------------------------------------------------------------------
    def handle(self, record: Record) -> None:
        """One record from any of the topics; one that does not parse is counted, not fatal."""
        before = dict(self.join.joined)
        self._handle(record)
        for version, count in self.join.joined.items():
            if count > before.get(version, 0):
                self.metrics.joined.labels(str(version)).inc(count - before.get(version, 0))

    def _handle(self, record: Record) -> None:
        if record.value is None:
            self.metrics.bad_records.labels(record.topic).inc()
            return
        try:
            if record.topic == self.settings.labelled_topic:
                article = decode_labelled_article(record.value)
                self.join.labelled(article.id, article.labels)
                return
            prediction = Prediction.model_validate_json(record.value)
        except (ValidationError, ValueError):
            self.metrics.bad_records.labels(record.topic).inc()
            return
        version = prediction.model_version
        labels = frozenset(label.name for label in prediction.labels)
        self.join.prediction(prediction.article_id, version, labels)
        self.mix.add(version, labels)
        for other, flips in self.agreement.prediction(prediction.article_id, version, labels):
            for label in flips:
                self.metrics.flips.labels(str(version), str(other), label).inc()

    # -- figures and verdicts ---------------------------------------------------------------
    def publish_figures(self) -> None:
        m = self.metrics
        for version in sorted(self.join.windows):
            fig = self.join.figures(version)
            v = str(version)
            m.micro_f1.labels(v).set(fig.micro_f1)
            m.macro_f1.labels(v).set(fig.macro_f1)
            m.window.labels(v).set(fig.count)
            for label, value in fig.precision.items():
                m.precision.labels(v, label).set(value)
            for label, value in fig.recall.items():
                m.recall.labels(v, label).set(value)
        for a, b in sorted(self.agreement.pairs):
            share, _ = self.agreement.share(a, b)
            m.agreement.labels(str(b), str(a)).set(share)
        for version, counts in self.mix.counts.items():
            priors = self._priors_of(version)
            if priors:
                m.psi.labels(str(version)).set(psi(counts, priors))
        waiting_predictions, waiting_labels = self.join.pending
        m.pending.labels("predictions").set(waiting_predictions)
        m.pending.labels("labels").set(waiting_labels)

    def _priors_of(self, version: int) -> dict[str, float]:
        if version not in self._priors:
            try:
                self._priors[version] = self._registry.manifest(version).training_data.label_priors
            except ModelError:
                return {}
        return self._priors[version]

    def check(self) -> Verdict | None:
        """Publish the figures; judge production against the version before it; act."""
        self.publish_figures()
        if not self.settings.auto_rollback:
            return None
        try:
            production = self._registry.resolve("production")
            history = self._registry.history("production")
        except ModelError as exc:
            self._once(f"{type(exc).__name__}: {exc}")
            return None
        if not history or production in self._acted:
            return None
        verdict = judge(production, history[0], self.join, self.agreement, self.settings)
        if verdict is None:
            return None
        self._acted.add(production)
        try:
            restored = self._registry.rollback("production", expect=production)
        except ModelError as exc:
            log.warning("Could not roll production back.", reason=verdict.reason, error=str(exc))
            return None
        self.metrics.rollbacks.inc()
        self.verdicts.append(verdict)
        log.warning(
            "Rolled production back.",
            rolled_back=verdict.production,
            restored=restored,
            reason=verdict.reason,
        )
        return verdict

    def _once(self, error: str) -> None:
        if error != self._last_error:
            log.warning("The registry cannot be read; rollback checks wait.", error=error)
            self._last_error = error

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        topics = [self.settings.predictions_topic, self.settings.labelled_topic]
        if self.settings.shadow_topic:
            topics.append(self.settings.shadow_topic)
        with ExitStack() as stack:
            if self.settings.metrics_port is not None:
                health = HealthServer(
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                    self.metrics.registry,
                    lambda: (True, "alive"),
                    lambda: (self.ready.is_set(), "reading" if self.ready.is_set() else "starting"),
                )
                stack.enter_context(health)
                self.port = health.port
                log.info("Monitor metrics are served.", port=health.port)
            reader = Reader(self._kafka, topics, start=self.settings.start)
            stack.callback(reader.close)
            stack.callback(self._registry.close)
            self.ready.set()
            log.info("Monitor started.", topics=topics, start=self.settings.start)
            next_check = time.monotonic() + self.settings.check_interval_s
            while not self._stop.is_set():
                try:
                    records = reader.poll(POLL_MS)
                except MessagingError as exc:
                    log.warning("Reading failed; trying again.", error=str(exc))
                    self._stop.wait(1.0)
                    continue
                for record in records:
                    self.handle(record)
                if time.monotonic() >= next_check:
                    self.check()
                    next_check = time.monotonic() + self.settings.check_interval_s
            log.info("Monitor stopped.")
