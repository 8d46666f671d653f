"""The scoring stage: scores each batch and turns it into the records to publish.

It drops the items whose partition was revoked or rewound since they were polled, scores
the rest with the model that encoded them, and builds one prediction or dead letter per
message. The results go to the delivery thread (``worker.delivery``) through a queue of one,
so the next batch is scored while the previous one is being published or committed.

A batch the model failed on as a whole (:attr:`worker.inference.Scored.systemic`) gets no
results at all: its partitions are rewound, as after a failed publish, so nothing of it is
dead-lettered or committed and it is read again; :class:`worker.breaker.Breaker` counts it
and, once most recent batches failed, holds scoring back for a growing backoff.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from common.logging import get_logger
from worker.assembler import Batches, ModelBatch
from worker.breaker import Breaker
from worker.inference import Model, Scored, Scorer
from worker.items import Item
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.results import Outgoing, Results
from worker.shadow import Shadow
from worker.stages import END, _End, get, put

log = get_logger("worker.scoring")


@dataclass(frozen=True)
class Answered:
    """A scored batch: one outgoing record per message still current, and how it went."""

    work: ModelBatch
    outgoing: list[Outgoing]
    scored: Scored
    context: dict[str, Any]
    scored_items: list[Item] = field(default_factory=list)
    """The items the model scored, in the order of ``scored.rows``."""


Answers = queue.Queue[Answered | _End]


class Scoring:
    """Scores batches in order and hands their results on."""

    def __init__(
        self,
        batches: Batches,
        answers: Answers,
        tracker: OffsetTracker,
        *,
        results: Results,
        scorer: Scorer,
        metrics: Metrics,
        breaker: Breaker,
        halt: threading.Event,
        stopping: threading.Event | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self._shadow = shadow
        self._breaker = breaker
        self._stopping = stopping
        self._batches = batches
        self._answers = answers
        self._tracker = tracker
        self._results = results
        self._scorer = scorer
        self._metrics = metrics
        self._halt = halt
        self.busy_since: float | None = None
        """When the batch being scored now started (None between batches)."""

    def run(self) -> None:
        while not self._halt.is_set():
            work = get(self._batches, self._halt)
            if work is None:
                continue
            if isinstance(work, _End):
                self._put(END)
                return
            if not self._breaker.wait(self._halt, self._stopping):
                return
            self.busy_since = time.monotonic()
            try:
                answered = self.score(work)
            finally:
                self.busy_since = None
            if answered is not None:
                self._put(answered)
                if self._shadow is not None:  # after production's results left: delays the next
                    self._shadow.after(work.model, answered.scored_items, answered.scored.rows)

    def score(self, work: ModelBatch) -> Answered | None:
        """The results of ``work``; None when none of its messages is current any more."""
        items = self._current(work.batch.items)
        if not items:
            return None
        to_score = [i for i in items if i.rejection is None]
        scored = self._scorer.score(work.model, [i.token_ids for i in to_score])
        if scored.systemic is not None:
            self._rewind(work, items, scored.systemic)
            return None
        if scored.rows:
            self._breaker.succeeded()
        outgoing = self._outcomes(work.model, items, scored)
        self._metrics.observe_inputs(
            [i.token_ids for i in to_score],
            [i.article.source for i in to_score if i.article is not None],
        )
        return Answered(work, outgoing, scored, batch_context(work, items), to_score)

    def _rewind(self, work: ModelBatch, items: list[Item], error: Exception) -> None:
        """The model is broken, not the articles: answer none, read them all again later."""
        for key in {(i.origin.tp, i.origin.epoch) for i in items}:
            self._tracker.fail(*key)
        self._metrics.systemic_failures.inc()
        self._metrics.discarded.inc(len(items))
        reason = f"{type(error).__name__}: {error}"
        log.warning(
            "the model fails on known-good input too; batch not answered, partitions rewound",
            **batch_context(work, items),
            error=reason,
        )
        self._breaker.failed(reason)

    def _put(self, answered: Answered | _End) -> None:
        put(self._answers, answered, self._halt)

    # -- scoring ----------------------------------------------------------------------------
    def _current(self, items: tuple[Item, ...]) -> list[Item]:
        epochs = {(i.origin.tp, i.origin.epoch) for i in items}
        live = {key for key in epochs if self._tracker.is_current(*key)}
        kept = [i for i in items if (i.origin.tp, i.origin.epoch) in live]
        if len(kept) < len(items):
            self._metrics.discarded.inc(len(items) - len(kept))
        return kept

    def _outcomes(self, model: Model, items: list[Item], scored: Scored) -> list[Outgoing]:
        rows = iter(scored.rows)
        decisions = decide_all(model, scored)
        now = datetime.now(UTC)
        outgoing = []
        for item in items:
            if item.rejection is not None:
                outgoing.append(self._results.rejected(item))
                continue
            row = next(rows)
            if isinstance(row, Exception):
                outgoing.append(self._results.failed(item, row))
                continue
            decided = next(decisions) if decisions is not None else None
            try:
                outgoing.append(self._results.prediction(item, row, model, now, decided))
            except Exception as exc:  # a result that does not fit its schema is a bug, not a crash
                outgoing.append(
                    self._results.dead_letter(item.origin, "internal", unfit(exc), item.payload)
                )
        return outgoing


def decide_all(model: Model, scored: Scored) -> Iterator[list[tuple[str, float]]] | None:
    """The labels of every scored row, decided for the batch at once (in a few array
    operations, not a few per article); None if that fails, and then each row is decided
    alone, so that a row the rule cannot take becomes one dead letter, not the batch's."""
    rows = [row for row in scored.rows if not isinstance(row, Exception)]
    try:
        return iter(model.decide_rows(np.stack(rows))) if rows else iter(())
    except Exception:
        return None


def unfit(exc: Exception) -> str:
    """Why a result did not fit its schema, without the values it held (they may be input)."""
    if not isinstance(exc, ValidationError):
        return type(exc).__name__
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return f"the result does not fit its schema: {where}"


def batch_context(work: ModelBatch, items: list[Item]) -> dict[str, Any]:
    """What every log line about this batch carries: id, model, partitions, offset ranges."""
    ranges: dict[str, list[int]] = {}
    for item in items:
        key = f"{item.origin.tp.topic}-{item.origin.tp.partition}"
        low, high = ranges.get(key, [item.origin.offset, item.origin.offset])
        ranges[key] = [min(low, item.origin.offset), max(high, item.origin.offset)]
    return {
        "batch_id": work.batch_id,
        "model_version": work.model.version,
        "partition": sorted({i.origin.tp.partition for i in items}),
        "offset": ranges,
    }
