"""Predictions are written as JSON directly, and are exactly what the pydantic schema writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging import TopicPartition
from schemas import Article, LabelScore, Prediction, SourceRef
from tests.worker.fakes import FakeModel
from worker.items import Item, Origin
from worker.results import Results

LABEL = st.text(min_size=1, max_size=12)
ID = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s != "")
SCORE = st.floats(min_value=0.0, max_value=1.0, width=32) | st.sampled_from(
    [0.0, 1.0, 0.5, float("nan"), float("inf"), -1e-30, 1.0000001]
)
WHEN = st.datetimes(
    min_value=datetime(1970, 1, 2), timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])
)


def item(article_id: str, topic: str, partition: int, offset: int, received: datetime) -> Item:
    origin = Origin(TopicPartition(topic, partition), offset, 0, b"k", 0, received)
    return Item(origin, b"{}", Article(id=article_id), (1, 2, 3))


def through_pydantic(
    results: Results, it: Item, row: np.ndarray, model: FakeModel, at: datetime
) -> bytes:
    """The same prediction built the way the worker used to: the pydantic model, validated."""
    assert it.article is not None
    labels = [
        LabelScore(name=name, score=min(1.0, max(0.0, float(score))))
        for name, score in model.decide(row)
    ]
    scores = (
        {name: float(v) for name, v in zip(model.labels, row, strict=True)}
        if results.include_scores
        else None
    )
    origin = it.origin
    source = SourceRef(topic=origin.tp.topic, partition=origin.tp.partition, offset=origin.offset)
    return (
        Prediction(
            article_id=it.article.id,
            labels=labels,
            scores=scores,
            model_version=model.version,
            worker_id=results.worker_id,
            received_at=origin.received_at,
            classified_at=at,
            source=source,
        )
        .model_dump_json()
        .encode()
    )


@settings(max_examples=400, deadline=None)
@given(
    labels=st.lists(LABEL, min_size=1, max_size=6, unique=True),
    data=st.data(),
    article_id=ID,
    topic=st.text(min_size=1, max_size=20),
    partition=st.integers(0, 10_000),
    offset=st.integers(0, 2**62),
    received=WHEN,
    classified=WHEN,
    version=st.integers(1, 2**31),
    include_scores=st.booleans(),
    worker_id=st.text(min_size=1, max_size=20),
)
def test_a_prediction_is_byte_for_byte_what_the_schema_writes_and_validates(
    labels: list[str],
    data: st.DataObject,
    article_id: str,
    topic: str,
    partition: int,
    offset: int,
    received: datetime,
    classified: datetime,
    version: int,
    include_scores: bool,
    worker_id: str,
) -> None:
    row = np.asarray(
        data.draw(st.lists(SCORE, min_size=len(labels), max_size=len(labels))), dtype=np.float32
    )
    model = FakeModel(version=version, labels=labels)
    results = Results("out", "dlq", worker_id, include_scores=include_scores)
    it = item(article_id, topic, partition, offset, received)

    out = results.prediction(it, row, model, classified)

    assert out.value == through_pydantic(results, it, row, model, classified)
    if include_scores and not np.isfinite(row).all():
        return  # the schema's own output does not read back (NaN -> null): same bytes is the bar
    parsed = Prediction.model_validate_json(out.value)
    assert parsed.article_id == article_id
    assert [label.name for label in parsed.labels] == [n for n, _ in model.decide(row)]
    assert out.key == article_id.encode()
    assert out.topic == "out"


@pytest.mark.parametrize(("version", "labels"), [(0, ("earn",)), (1, ("earn", ""))])
def test_a_model_the_schema_would_refuse_gets_no_prediction(
    version: int, labels: tuple[str, ...]
) -> None:
    results = Results("out", "dlq", "w")
    it = item("a", "in", 0, 0, datetime.now(UTC))
    with pytest.raises(ValueError, match="model"):
        results.prediction(
            it,
            np.ones(len(labels), dtype=np.float32),
            FakeModel(version, labels),
            it.origin.received_at,
        )


def test_a_worker_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="worker_id"):
        Results("out", "dlq", "")
