"""The wire contracts: round trips, rejection of malformed payloads, fresh JSON Schema files."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    Article,
    DeadLetter,
    LabelledArticle,
    ModelManifest,
    Prediction,
    SourceRef,
    TrainingDataSummary,
    decode_article,
    export,
)

ids = (
    st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
when = st.datetimes(timezones=st.just(UTC))
articles = st.builds(
    Article,
    id=ids,
    title=texts,
    body=texts,
    source=st.text(min_size=1, max_size=20).filter(str.strip) | st.just("x"),
    published_at=st.none() | when,
)


@given(articles)
def test_article_survives_a_json_round_trip(article: Article) -> None:
    assert decode_article(article.model_dump_json().encode()) == article


@given(articles, st.lists(st.sampled_from(["earn", "acq", "crude"]), unique=True))
def test_labelled_article_survives_a_json_round_trip(article: Article, labels: list[str]) -> None:
    labelled = LabelledArticle(**article.model_dump(), labels=labels)
    assert LabelledArticle.model_validate_json(labelled.model_dump_json()) == labelled


@given(st.binary(max_size=200))
def test_dead_letter_carries_arbitrary_bytes_as_base64(payload: bytes) -> None:
    letter = DeadLetter(
        payload=payload,
        key=b"k",
        error_kind="decode",
        error_message="bad",
        source=SourceRef(topic="t", partition=0, offset=1),
        worker_id="w",
        failed_at=datetime.now(UTC),
    )
    encoded = letter.model_dump_json()
    assert DeadLetter.model_validate_json(encoded) == letter
    assert isinstance(json.loads(encoded)["payload"], str)


@given(st.binary(max_size=200))
def test_random_bytes_never_decode_to_an_article_without_an_id(payload: bytes) -> None:
    try:
        article = decode_article(payload)
    except ValidationError:
        return
    assert article.id


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "json_invalid"),
        (b'{"id": "a", "body": "\xff\xfe"}', "json_invalid"),
        (b'{"body": "no id"}', "missing"),
        (b'{"id": "", "body": "x"}', "string_too_short"),
        (b'{"id": "   ", "body": "x"}', "string_too_short"),
        (b'{"id": null, "body": "x"}', "string_type"),
        (b'{"id": 7, "body": "x"}', "string_type"),
        (b'{"id": "a\\u0000b"}', "string_pattern_mismatch"),
        (b'{"id": "a", "unknown": 1}', "extra_forbidden"),
        (b'{"id": "a", "schema_version": 2}', "literal_error"),
        (b"[]", "model_type"),
        (b"", "json_invalid"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_article(payload)
    assert reason in {error["type"] for error in caught.value.errors()}


def test_body_limit_is_applied_in_utf8_bytes_and_is_configurable() -> None:
    payload = json.dumps({"id": "a", "body": "é" * 600}).encode()
    decode_article(payload, max_body_bytes=1200)
    with pytest.raises(ValidationError, match="1200 bytes, over the limit of 1000"):
        decode_article(payload, max_body_bytes=1000)


def test_manifest_needs_one_threshold_per_label() -> None:
    with pytest.raises(ValidationError, match="2 thresholds for 1 labels"):
        ModelManifest(
            created_at=datetime.now(UTC),
            labels=["earn"],
            thresholds=[0.5, 0.5],
            encoder_digest="0123456789",
            training_data=TrainingDataSummary(train_documents=1, validation_documents=1),
        )


def test_prediction_scores_are_probabilities() -> None:
    with pytest.raises(ValidationError):
        Prediction.model_validate(
            {
                "article_id": "a",
                "labels": [{"name": "earn", "score": 1.5}],
                "model_version": 1,
                "worker_id": "w",
                "received_at": "2024-01-01T00:00:00Z",
                "classified_at": "2024-01-01T00:00:00Z",
                "source": {"topic": "t", "partition": 0, "offset": 0},
            }
        )


def test_json_schema_files_match_the_models() -> None:
    stale = export.stale()
    assert not stale, f"run `tagstream schemas export`: stale {stale}"
