"""Shadow scoring: the canary version scores (a share of) the live articles beside production.

The shadow never changes what the worker publishes for production, nor its offsets: it runs on
the scoring thread *after* a batch's production results were handed to delivery, so it delays
the next batch, never this one, and it is held to a budget: at most ``max_delay_ms`` per batch.
It scores in chunks sized, from the cost per article measured so far (a one-article probe at
first), to what is left of the budget, and stops when the next chunk would not fit; articles
left over are counted as skipped. Production predictions so wait no more than about
``max_delay_ms`` a batch for it (one article's cost can overshoot it).

A shadow model has its own encoder, so each sampled article is encoded again from its text.
Its results are compared with production's (label sets agree or not; which labels flip), and,
with ``shadow_topic`` set, published there as ordinary predictions carrying the shadow's
version. Those records are diagnostics: sent at most once, outside any transaction, never
tied to offsets; a failed send is counted and dropped.

The canary alias is watched like production's; a new canary version is loaded and warmed up
on a thread of its own, and only then replaces the shadow model. While the canary alias is
unset, or its version cannot be loaded, there is no shadow pass.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np

from common.logging import get_logger
from worker.inference import Model, Scorer
from worker.items import Item
from worker.metrics import Metrics
from worker.results import Results
from worker.sink import Sink

log = get_logger("worker.shadow")

RETRY_S = 5.0
"""Wait before trying again to load a canary version that failed."""


class ShadowSlot:
    """The shadow model now (None: no shadow pass), loaded off the scoring thread."""

    def __init__(self, load: Callable[[int], Model], metrics: Metrics) -> None:
        self._load = load
        self._metrics = metrics
        self._model: Model | None = None
        self._wanted: int | None = None
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="shadow-loader", daemon=True)

    def current(self) -> Model | None:
        return self._model

    def start(self) -> ShadowSlot:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self._thread.join(timeout=10)

    def want(self, version: int | None) -> None:
        """Serve ``version`` as the shadow (None: stop shadowing)."""
        with self._wake:
            self._wanted = version
            self._wake.notify_all()
        if version is None:
            self._install(None)

    def _install(self, model: Model | None) -> None:
        previous = self._model.version if self._model is not None else None
        self._model = model
        self._metrics.shadow_version.set(model.version if model is not None else 0)
        log.info(
            "Shadow model changed.",
            shadow_version=model.version if model is not None else None,
            previous=previous,
        )

    def _run(self) -> None:
        last_error = None
        while True:
            with self._wake:
                while not self._stopped and (
                    self._wanted is None
                    or (self._model is not None and self._model.version == self._wanted)
                ):
                    self._wake.wait()
                if self._stopped:
                    return
                version = self._wanted
            assert version is not None
            try:
                model = self._load(version)
                model.warm_up()
            except Exception as exc:  # the canary may be fixed or replaced: try again later
                reason = f"{type(exc).__name__}: {exc}"
                if reason != last_error:
                    log.warning(
                        "Shadow model could not be loaded; trying again.",
                        shadow_version=version,
                        error=reason,
                        retry_s=RETRY_S,
                    )
                    last_error = reason
                with self._wake:
                    self._wake.wait(RETRY_S)
                continue
            last_error = None
            with self._wake:
                current = self._wanted == version
            if current:
                self._install(model)


class Shadow:
    """Scores a sample of each batch with the shadow model, within a time budget."""

    def __init__(
        self,
        slot: ShadowSlot,
        *,
        share: float,
        max_delay_ms: float,
        results: Results,
        sink: Sink | None,
        topic: str | None,
        metrics: Metrics,
        scorer: Scorer,
        clock: Callable[[], float] = time.perf_counter,
        seed: int | None = None,
    ) -> None:
        self._slot = slot
        self._share = share
        self._budget_s = max_delay_ms / 1000
        self._results = results
        self._sink = sink
        self._topic = topic
        self._metrics = metrics
        self._scorer = scorer
        self._clock = clock
        self._rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
        self._seconds_per_article: float | None = None
        """Mean cost of one article in the passes so far (None before the first)."""

    def capacity(self, budget_s: float) -> int:
        """How many articles fit in ``budget_s`` at the cost measured so far (1 before any
        measurement: a probe)."""
        if self._seconds_per_article is None:
            return 1
        return max(0, int(budget_s / self._seconds_per_article))

    def after(self, production: Model, items: Sequence[Item], rows: Sequence[object]) -> int:
        """Shadow-score a sample of ``items`` (production's ``rows`` beside them) in chunks
        that fit the budget; returns how many it scored."""
        model = self._slot.current()
        if model is None or model.version == production.version:
            return 0
        todo = [
            (item, item.article.text, row)
            for item, row in zip(items, rows, strict=True)
            if isinstance(row, np.ndarray)
            and item.article is not None
            and self._rng.random() < self._share
        ]
        left_s = self._budget_s
        done = 0
        while todo:
            count = min(len(todo), self.capacity(left_s))
            if count == 0:
                break
            chunk, todo = todo[:count], todo[count:]
            started = self._clock()
            try:
                result = self._scorer.score(model, model.encode([text for _, text, _ in chunk]))
            except Exception as exc:  # a broken canary never stops production
                self._metrics.shadow_failures.inc(len(chunk) + len(todo))
                log.warning("Shadow pass failed.", shadow_version=model.version, error=repr(exc))
                return done
            spent = self._clock() - started
            left_s -= spent
            self._learn(spent / len(chunk))
            self._metrics.shadow_seconds.observe(spent)
            self._compare(production, model, [(i, row) for i, _, row in chunk], result.rows)
            done += len(chunk)
        if todo:
            self._metrics.shadow_skipped.inc(len(todo))
        return done

    def _learn(self, per_article_s: float) -> None:
        previous = self._seconds_per_article
        self._seconds_per_article = (
            per_article_s if previous is None else 0.7 * previous + 0.3 * per_article_s
        )

    def _compare(
        self,
        production: Model,
        model: Model,
        sampled: Sequence[tuple[Item, np.ndarray]],
        shadow_rows: Sequence[object],
    ) -> None:
        now = datetime.now(UTC)
        m = self._metrics
        for (item, row), shadow_row in zip(sampled, shadow_rows, strict=True):
            if not isinstance(shadow_row, np.ndarray):
                m.shadow_failures.inc()
                continue
            live = {name for name, _ in production.decide(row)}
            shadow = {name for name, _ in model.decide(shadow_row)}
            m.shadow_articles.inc()
            if live == shadow:
                m.shadow_agreements.inc()
            for label in live ^ shadow:
                m.shadow_flips.labels(label).inc()
            if self._sink is not None and self._topic is not None:
                out = self._results.prediction(item, shadow_row, model, now)
                self._sink.send(self._topic, out.key, out.value, self._on_sent)

    def _on_sent(self, error: BaseException | None) -> None:
        if error is not None:
            self._metrics.shadow_failures.inc()
