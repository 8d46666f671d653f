"""The Reuters split rules and text cleaning, on synthetic documents the tests build."""

from __future__ import annotations

from typing import Any

from corpus.reuters import TEST_MIN_ID, TRAIN_MAX_ID, clean, in_validation, split


def doc(doc_id: int, topics: list[str] | None, body: str = "text\n Reuter\n\x03") -> dict[str, Any]:
    return {
        "id": str(doc_id),
        "title": f"TITLE {doc_id}",
        "body": body,
        "date": "26-FEB-1987 15:01:01.79",
        "topics": topics,
    }


def test_clean_removes_control_characters_and_the_reuter_sign_off() -> None:
    assert clean("Prices rose.\n Reuter\n\x03") == "Prices rose."
    assert clean("a\x00b\tc\nd REUTER") == "ab\tc\nd"
    assert clean(None) == ""


def test_clean_keeps_reuter_inside_the_text() -> None:
    assert clean("Reuter said prices rose") == "Reuter said prices rose"


def test_split_uses_id_ranges_and_keeps_only_labels_seen_in_train_and_test() -> None:
    docs = [doc(i, ["earn"]) for i in range(1, 200)]
    docs += [doc(300, ["only-train"]), doc(TRAIN_MAX_ID + 3, ["earn"])]  # gap: dropped
    docs += [doc(TEST_MIN_ID, ["earn", "only-test"]), doc(TEST_MIN_ID + 1, ["only-test"])]
    docs += [doc(500, None), doc(501, [])]
    corpus = split(docs)
    assert corpus.labels == ["earn"]
    assert [a.id for a in corpus.test] == [f"reuters-{TEST_MIN_ID}"]
    assert corpus.test[0].labels == ["earn"]
    train_ids = {a.id for a in corpus.train + corpus.validation}
    assert train_ids == {f"reuters-{i}" for i in range(1, 200)}


def test_validation_is_a_stable_hash_of_the_id_near_ten_percent() -> None:
    corpus = split([doc(i, ["earn"]) for i in range(1, 2001)] + [doc(TEST_MIN_ID, ["earn"])])
    assert 150 <= len(corpus.validation) <= 250
    assert all(in_validation(a.id.removeprefix("reuters-")) for a in corpus.validation)
    again = split(
        [doc(i, ["earn"]) for i in reversed(range(1, 2001))] + [doc(TEST_MIN_ID, ["earn"])]
    )
    assert {a.id for a in again.validation} == {a.id for a in corpus.validation}


def test_articles_are_cleaned_and_dated() -> None:
    corpus = split([doc(1, ["earn"]), doc(TEST_MIN_ID, ["earn"], body="")])
    article = (corpus.train + corpus.validation)[0]
    assert article.body == "text"
    assert article.published_at is not None and article.published_at.year == 1987
    assert corpus.test[0].body == "" and corpus.test[0].title
