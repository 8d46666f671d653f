"""Predictions out (``articles.predictions``), one per article."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Contract, NonEmptyId, SourceRef


class LabelScore(Contract):
    """A label whose score passed its threshold."""

    name: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)


class Prediction(Contract):
    """What a worker concluded about one article, and which model concluded it."""

    schema_version: Literal[1] = 1
    article_id: NonEmptyId
    labels: list[LabelScore]
    scores: dict[str, float] | None = None
    model_version: int = Field(ge=1)
    worker_id: str = Field(min_length=1)
    received_at: datetime
    classified_at: datetime
    source: SourceRef
