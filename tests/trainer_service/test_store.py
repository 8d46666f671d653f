"""The example store keeps every labelled record once, across redeliveries and restarts."""

from __future__ import annotations

import threading
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


def test_a_reader_in_another_thread_never_sees_an_append_that_is_rolled_back(
    tmp_path: Path,
) -> None:
    """A cycle reading while ingest is inside its transaction sees committed rows only."""
    inside, read_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def records():
        yield record("a", 0, ["earn"])
        yield record("b", 1, ["acq"])
        inside.set()
        assert read_done.wait(30), "the reader did not finish"
        raise RuntimeError("consumer died mid-batch")

    def cycle() -> None:
        assert inside.wait(30), "the append did not start"
        seen["count"] = store.count()
        seen["ids"] = [a.id for a in store.examples()]
        seen["sequence"] = store.sequence()
        read_done.set()

    with ExampleStore(tmp_path / "store.db") as store:
        reader = threading.Thread(target=cycle)
        reader.start()
        with pytest.raises(RuntimeError, match="mid-batch"):
            store.append(records())
        reader.join(30)
        assert seen == {"count": 0, "ids": [], "sequence": 0}
        assert store.count() == 0


def test_ingest_and_cycles_in_threads_see_whole_appends_and_lose_nothing(tmp_path: Path) -> None:
    """Appends of ten records race with cycles reading; each read sees whole appends only."""
    batches, size = 60, 10
    errors: list[BaseException] = []
    partial: list[int] = []
    ingest_done = threading.Event()

    def ingest() -> None:
        try:
            for b in range(batches):
                store.append([record(f"a{b}-{i}", b * size + i, ["earn"]) for i in range(size)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            ingest_done.set()

    def cycles() -> None:
        try:
            while not ingest_done.is_set():
                seen = len(list(store.examples()))
                if seen % size:
                    partial.append(seen)
                store.sequence()
                store.count()
        except BaseException as exc:
            errors.append(exc)

    with ExampleStore(tmp_path / "store.db") as store:
        threads = [threading.Thread(target=ingest)] + [
            threading.Thread(target=cycles) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert partial == []
        assert store.count() == batches * size
        assert store.positions() == {("labelled", 0): batches * size}
