"""Records become items or rejections with a reason; nothing raises on input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.worker.fakes import FakeModel, article
from worker.decoding import to_items
from worker.items import Polled, Record

NOW = datetime(2025, 1, 1, tzinfo=UTC)


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
        (b'{"id": "a", "body": "x", "surprise": 1}', "validation", "surprise"),
        (b'{"id": "a\\u0000b", "body": "x"}', "validation", "id"),
        (b'{"id": "a", "title": "", "body": "   "}', "validation", "nothing to classify"),
        (b'{"id": "a", "body": "' + b"w" * 300_000 + b'"}', "validation", "over the limit"),
    ],
)
def test_a_bad_message_becomes_a_rejection_that_names_why(
    payload: bytes | None, kind: str, reason: str
) -> None:
    [item] = to_items(polled([payload]), FakeModel(), max_body_bytes=256 * 1024)
    assert item.rejection is not None
    assert item.rejection.kind == kind
    assert reason in item.rejection.message
    assert item.payload == (payload or b"")
    assert len(item.rejection.message) <= 4096


def test_a_rejection_message_never_quotes_the_input() -> None:
    secret = "hunter2-password"
    payload = json.dumps({"id": "a", "body": 1, "title": [secret]}).encode()
    [item] = to_items(polled([payload]), FakeModel(), max_body_bytes=1024)
    assert item.rejection is not None
    assert secret not in item.rejection.message


def test_good_articles_are_encoded_in_order_around_bad_ones() -> None:
    values: list[bytes | None] = [article(0), b"{", article(2, "a bb ccc"), None]
    items = to_items(polled(values), FakeModel(), max_body_bytes=1024)
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
    items = to_items(polled(values), ChokingEncoder(), max_body_bytes=1024)
    assert items[0].token_ids == (1, 2)
    assert items[1].rejection is not None
    assert items[1].rejection.kind == "encoding"
    assert "choked" in items[1].rejection.message
    assert items[2].token_ids == (1, 2)


def test_an_article_that_encodes_to_no_tokens_is_rejected_as_encoding() -> None:
    [item] = to_items(polled([article(0, "empty")]), ChokingEncoder(), max_body_bytes=1024)
    assert item.rejection is not None
    assert item.rejection.kind == "encoding"
    assert "no tokens" in item.rejection.message
