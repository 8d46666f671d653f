"""The scoring stage: scores each batch and turns it into the records to publish.

It drops the items whose partition was revoked or rewound since they were polled, scores
the rest with the model that encoded them, and builds one prediction or dead letter per
message. The results go to the delivery thread (``worker.delivery``) through a queue of one,
so the next batch is scored while the previous one is being published or committed.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from worker.assembler import Batches, ModelBatch
from worker.inference import Model, Scored, Scorer
from worker.items import Item
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.results import Outgoing, Results
from worker.shadow import Shadow
from worker.stages import END, _End, get, put


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
        halt: threading.Event,
        shadow: Shadow | None = None,
    ) -> None:
        self._shadow = shadow
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
        outgoing, scored = self._outcomes(work.model, items)
        scored_items = [i for i in items if i.rejection is None]
        self._metrics.observe_inputs(
            [i.token_ids for i in scored_items],
            [i.article.source for i in scored_items if i.article is not None],
        )
        return Answered(work, outgoing, scored, batch_context(work, items), scored_items)

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

    def _outcomes(self, model: Model, items: list[Item]) -> tuple[list[Outgoing], Scored]:
        to_score = [i for i in items if i.rejection is None]
        scored = self._scorer.score(model, [i.token_ids for i in to_score])
        rows = iter(scored.rows)
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
            try:
                outgoing.append(self._results.prediction(item, row, model, now))
            except Exception as exc:  # a result that does not fit its schema is a bug, not a crash
                outgoing.append(
                    self._results.dead_letter(item.origin, "internal", unfit(exc), item.payload)
                )
        return outgoing, scored


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
