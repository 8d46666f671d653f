"""Records become items or rejections with a reason; nothing raises on input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import LabelledArticle
from tests.worker.fakes import FakeModel, article
from worker.decoding import describe, to_items
from worker.items import Polled, Record

NOW = datetime(2025, 1, 1, tzinfo=UTC)
MiB = 1024 * 1024


def polled(values: list[bytes | None]) -> list[Polled]:
    return [Polled(Record("articles", 0, i, b"k", v, 0), 1, NOW) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("payload", "kind", "reason"),
    [
        (b"not json at all", "decode", "Invalid JSON"),
        (b"\xff\xfe\xfd", "decode", "Invalid JSON"),
        (b"", "decode", "Invalid JSON"),
        (None, "decode", "no value"),
        (b"[" * 5000 + b"]" * 5000, "decode", "recursion limit"),
        (b'{"id": null, "body": "x"}', "validation", "id"),
        (b'{"id": "a", "body": 42}', "validation", "body"),
        (b'{"body": "no id"}', "validation", "id: Field required"),
        (b'{"id": "a", "body": "x", "surprise": 1}', "validation", "(unexpected field): Extra"),
        (b'{"id": "a\\u0000b", "body": "x"}', "validation", "id"),
        (b'{"id": "a", "title": "", "body": "   "}', "validation", "nothing to classify"),
        (b'{"id": "a", "body": "' + b"w" * 300_000 + b'"}', "validation", "over the limit"),
    ],
)
def test_a_bad_message_becomes_a_rejection_that_names_why(
    payload: bytes | None, kind: str, reason: str
) -> None:
    [item] = to_items(
        polled([payload]), FakeModel(), max_body_bytes=256 * 1024, max_message_bytes=MiB
    )
    assert item.rejection is not None
    assert item.rejection.kind == kind
    assert reason in item.rejection.message
    assert item.payload == (payload or b"")
    assert len(item.rejection.message) <= 4096


def test_a_rejection_message_never_quotes_the_input() -> None:
    secret = "hunter2-password"
    payload = json.dumps({"id": "a", "body": 1, "title": [secret]}).encode()
    [item] = to_items(polled([payload]), FakeModel(), max_body_bytes=1024, max_message_bytes=MiB)
    assert item.rejection is not None
    assert secret not in item.rejection.message


HOSTILE = "</script>hunter2\u202e\x1b[31m"
"""A key or value no reason may repeat: markup, a secret, a bidi override, a terminal escape."""


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"id": "a", "body": "x", HOSTILE: 1}, "(unexpected field): Extra inputs"),
        ({"id": "a", "body": "x", "metadata": {HOSTILE: [HOSTILE]}}, "metadata.(key).str: "),
        ({"id": "a", "body": "x", "metadata": {"n": {HOSTILE: 1}}}, "metadata.(key).int: "),
        ({"id": "a", "body": "x", "metadata": HOSTILE}, "metadata: Input should be"),
        ({"id": [HOSTILE], "title": {HOSTILE: HOSTILE}}, "title: Input should be"),
        ({"id": "a", "body": "x", "published_at": HOSTILE}, "published_at: Input should be"),
        ({"id": "a", "body": "x", "language": HOSTILE * 9}, "language: String should have"),
        ({HOSTILE: {HOSTILE: HOSTILE}, "id": HOSTILE + "\x00"}, "id: String should match"),
    ],
)
def test_a_reason_names_the_schema_path_and_never_a_key_or_value_from_the_input(
    document: dict[str, Any], path: str
) -> None:
    payload = json.dumps(document).encode()
    [item] = to_items(polled([payload]), FakeModel(), max_body_bytes=1024, max_message_bytes=MiB)
    assert item.rejection is not None
    assert path in item.rejection.message
    for fragment in ("hunter2", "script", "\u202e", "\x1b", "[31m"):
        assert fragment not in item.rejection.message, item.rejection.message


def test_a_labelled_articles_label_is_named_by_its_position() -> None:
    with pytest.raises(ValidationError) as raised:
        LabelledArticle.model_validate({"id": "a", "labels": ["ok", "", 5], HOSTILE: 1})
    _, reason = describe(raised.value, LabelledArticle)
    assert "labels.1: String should have at least 1 character" in reason
    assert "labels.2: Input should be a valid string" in reason
    assert "(unexpected field)" in reason
    assert "hunter2" not in reason


def test_a_message_over_the_size_limit_is_rejected_before_it_is_parsed() -> None:
    too_big = b"{" * (MiB + 1)  # would be a recursion error if it were parsed
    just_fits = article(7, "x " * 100).ljust(2048, b" ")
    items = to_items(polled([too_big, just_fits]), FakeModel(), 1024, max_message_bytes=2048)
    assert items[0].rejection is not None
    assert items[0].rejection.kind == "validation"
    assert items[0].rejection.message == (
        f"message is {MiB + 1} bytes, over the limit of 2048: not parsed"
    )
    assert items[0].payload == too_big
    assert items[1].rejection is None


def test_good_articles_are_encoded_in_order_around_bad_ones() -> None:
    values: list[bytes | None] = [article(0), b"{", article(2, "a bb ccc"), None]
    items = to_items(polled(values), FakeModel(), max_body_bytes=1024, max_message_bytes=MiB)
    assert [i.rejection is None for i in items] == [True, False, True, False]
    assert [i.origin.offset for i in items] == [0, 1, 2, 3]
    assert items[2].article is not None and items[2].article.id == "a2"
    assert items[2].token_ids == (5, 1, 1, 2, 3)  # "title 2 a bb ccc"


class ChokingEncoder(FakeModel):
    def encode(self, texts: list[str]) -> list[list[int]]:  # type: ignore[override]
        if any("choke" in t for t in texts):
            raise UnicodeError("the tokenizer choked")
        return [[] if "empty" in t else [1, 2] for t in texts]


def test_an_encoder_failure_is_isolated_to_the_article_that_caused_it() -> None:
    values: list[bytes | None] = [article(0), article(1, "choke here"), article(2, "fine")]
    items = to_items(polled(values), ChokingEncoder(), max_body_bytes=1024, max_message_bytes=MiB)
    assert items[0].token_ids == (1, 2)
    assert items[1].rejection is not None
    assert items[1].rejection.kind == "encoding"
    assert "UnicodeError" in items[1].rejection.message
    assert items[2].token_ids == (1, 2)


def test_an_article_that_encodes_to_no_tokens_is_rejected_as_encoding() -> None:
    [item] = to_items(
        polled([article(0, "empty")]), ChokingEncoder(), max_body_bytes=1024, max_message_bytes=MiB
    )
    assert item.rejection is not None
    assert item.rejection.kind == "encoding"
    assert "no tokens" in item.rejection.message
