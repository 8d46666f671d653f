"""Items and their scores -> the records the worker publishes (predictions, dead letters)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydantic_core import to_json

from schemas import DeadLetter, ErrorKind
from worker.decoding import MAX_ERROR_CHARS
from worker.inference import Model
from worker.items import Item, Origin


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish, and the message it answers for."""

    topic: str
    key: bytes | None
    value: bytes
    origin: Origin
    error_kind: ErrorKind | None = None
    payload: bytes = b""
    """The original message of a prediction, for the dead letter that replaces it should the
    broker refuse the prediction itself (see ``worker.delivery``)."""


class Results:
    """Builds predictions and dead letters for one worker."""

    def __init__(
        self,
        output_topic: str,
        dlq_topic: str,
        worker_id: str,
        *,
        include_scores: bool = False,
        max_payload_bytes: int = 256 * 1024,
    ) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.worker_id = worker_id
        self.include_scores = include_scores
        self.max_payload_bytes = max_payload_bytes
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        self._checked_model: Model | None = None

    def prediction(
        self,
        item: Item,
        row: np.ndarray,
        model: Model,
        classified_at: datetime,
        decided: list[tuple[str, float]] | None = None,
    ) -> Outgoing:
        """A :class:`schemas.Prediction` as JSON, written without building the model object.

        The bytes are those of ``Prediction(...).model_dump_json()`` (tests/worker/
        test_results.py holds them to it): the fields in the schema's order, serialised by
        pydantic-core. Building and validating a pydantic object per article cost a tenth of
        the worker's CPU (docs/benchmarks.md, "Worker overhead, round 2"); what validation
        checked is true by construction here: the id was validated with its article, a score
        is clamped into [0, 1], and the model's labels and version are checked once per model.
        ``decided`` is ``model.decide(row)`` when the caller decided the whole batch at once.
        """
        assert item.article is not None, "only a decoded article is predicted"
        if model is not self._checked_model:
            check_model(model)
            self._checked_model = model
        if decided is None:
            decided = model.decide(row)
        labels = [{"name": name, "score": min(1.0, max(0.0, score))} for name, score in decided]
        origin = item.origin
        prediction = {
            "schema_version": 1,
            "article_id": item.article.id,
            "labels": labels,
            "scores": dict(zip(model.labels, row.tolist(), strict=True))
            if self.include_scores
            else None,
            "model_version": model.version,
            "worker_id": self.worker_id,
            "received_at": origin.received_at,
            "classified_at": classified_at,
            "source": {
                "topic": origin.tp.topic,
                "partition": origin.tp.partition,
                "offset": origin.offset,
            },
        }
        return Outgoing(
            self.output_topic,
            item.article.id.encode(),
            to_json(prediction, inf_nan_mode="null"),
            origin,
            payload=item.payload,
        )

    def dead_letter(
        self,
        origin: Origin,
        kind: ErrorKind,
        message: str,
        payload: bytes,
        *,
        keep_key: bool = True,
    ) -> Outgoing:
        note = ""
        if len(payload) > self.max_payload_bytes:
            note = f" (payload cut to its first {self.max_payload_bytes} of {len(payload)} bytes)"
            payload = payload[: self.max_payload_bytes]
        key = origin.key if keep_key else None
        letter = DeadLetter(
            payload=payload,
            key=key,
            error_kind=kind,
            error_message=(message or kind)[: MAX_ERROR_CHARS - len(note)] + note,
            source=origin.ref(),
            worker_id=self.worker_id,
            failed_at=datetime.now(UTC),
        )
        return Outgoing(
            self.dlq_topic, key, letter.model_dump_json().encode(), origin, error_kind=kind
        )

    def rejected(self, item: Item) -> Outgoing:
        assert item.rejection is not None, "only a rejected item becomes a dead letter"
        rejection = item.rejection
        return self.dead_letter(item.origin, rejection.kind, rejection.message, item.payload)

    def unpublishable(self, out: Outgoing, exc: Exception) -> Outgoing:
        """A bare dead letter (no payload, no key) for a result the client refused to send."""
        return self.dead_letter(
            out.origin,
            "internal",
            f"result could not be published: {type(exc).__name__}: {exc}",
            b"",
            keep_key=False,
        )

    def refused(self, out: Outgoing, reason: str, *, bare: bool) -> Outgoing:
        """A dead letter for a result the broker kept refusing: with the original message
        (a prediction's replacement) or ``bare`` (no payload, no key: the last resort)."""
        return self.dead_letter(
            out.origin,
            "internal",
            f"result refused by the broker: {reason}",
            b"" if bare else out.payload,
            keep_key=not bare,
        )

    def failed(self, item: Item, exc: Exception) -> Outgoing:
        """A dead letter for an article the model failed on alone."""
        return self.dead_letter(
            item.origin, "inference", f"{type(exc).__name__}: {exc}", item.payload
        )


def check_model(model: Model) -> None:
    """What :class:`schemas.Prediction` asks of the model: a version >= 1, named labels."""
    if model.version < 1:
        raise ValueError(f"model version must be at least 1, not {model.version}")
    if not all(model.labels):
        raise ValueError("every label of the model must have a name")
