"""The example store keeps every labelled record once, across redeliveries and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import LabelledArticle, SourceRef
from trainer.store import ExampleStore, StoredRecord


def record(article_id: str, offset: int, labels: list[str], partition: int = 0) -> StoredRecord:
    return StoredRecord(
        LabelledArticle(id=article_id, body=f"text of {article_id}", labels=labels),
        SourceRef(topic="labelled", partition=partition, offset=offset),
    )


def test_redelivered_offsets_are_not_stored_twice(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "store.db") as store:
        assert store.append([record("a", 0, ["earn"]), record("b", 1, ["acq"])]) == 2
        assert (
            store.append(
                [record("a", 0, ["earn"]), record("b", 1, ["acq"]), record("c", 2, ["crude"])]
            )
            == 1
        )
        assert store.count() == 3
        assert store.positions() == {("labelled", 0): 3}


def test_examples_and_positions_survive_a_reopen(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "store.db") as store:
        store.append([record("a", 5, ["earn"], partition=1)])
    with ExampleStore(tmp_path / "store.db") as store:
        assert [a.id for a in store.examples()] == ["a"]
        assert store.positions() == {("labelled", 1): 6}


def test_a_newer_label_for_the_same_article_replaces_the_old_one(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "store.db") as store:
        store.append([record("a", 0, ["earn"]), record("a", 1, ["acq"])])
        assert [(a.id, a.labels) for a in store.examples()] == [("a", ["acq"])]
        assert store.sequence() == 2


def test_a_failed_append_stores_nothing(tmp_path: Path) -> None:
    def records():
        yield record("a", 0, ["earn"])
        raise RuntimeError("consumer died mid-batch")

    with ExampleStore(tmp_path / "store.db") as store:
        with pytest.raises(RuntimeError, match="mid-batch"):
            store.append(records())
        assert store.count() == 0 and store.positions() == {}
