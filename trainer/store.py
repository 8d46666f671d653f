"""The durable store of labelled examples that arrive on Kafka.

A SQLite database (WAL, synchronous=FULL) holds one row per article id (the newest label
wins) and, per topic partition, the next offset to read. Both change in one transaction, so
a record is stored exactly once however often Kafka delivers it: a redelivered offset below
the stored position is skipped. The consumer commits its Kafka offsets only after
:meth:`ExampleStore.append` returned, and seeks to :meth:`ExampleStore.positions` on
assignment, which makes the store, not the consumer group, the source of truth.

The store is used from several threads (the consume loop appends while a training cycle
reads): each thread gets a connection of its own, so a reader sees committed data only (a
WAL snapshot per statement) and never runs inside another thread's write transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from schemas import LabelledArticle, SourceRef
from trainer.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    article_id TEXT PRIMARY KEY,
    payload    TEXT NOT NULL,
    sequence   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    topic      TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class StoredRecord:
    """One labelled article and where it was read."""

    article: LabelledArticle
    source: SourceRef


class ExampleStore:
    """Labelled examples and consumer positions in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._guard = threading.Lock()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._closed = False
        try:
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the example store {self.path}: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def _connect(self) -> sqlite3.Connection:
        with self._guard:
            if self._closed:
                raise StoreError(f"the example store {self.path} is closed")
            self._close_orphans()
            try:
                # check_same_thread=False only so that close() may close every thread's
                # connection; each is used by the thread that opened it.
                db = sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the example store {self.path}: {exc}") from exc
            self._connections[threading.current_thread()] = db
            return db

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended (each training cycle is one)."""
        for thread in [t for t in self._connections if not t.is_alive()]:
            self._connections.pop(thread).close()

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._guard:
            self._closed = True
            connections, self._connections = list(self._connections.values()), {}
        for db in connections:
            db.close()

    def __enter__(self) -> ExampleStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def append(self, records: Iterable[StoredRecord]) -> int:
        """Store records not stored before (by offset); returns how many were new."""
        stored = 0
        with self._transaction():
            positions = self._positions_locked()
            for record in records:
                key = (record.source.topic, record.source.partition)
                if record.source.offset < positions.get(key, 0):
                    continue
                positions[key] = record.source.offset + 1
                self._upsert(record.article)
                stored += 1
            self._db.executemany(
                "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT(topic, partition) "
                "DO UPDATE SET next_offset = excluded.next_offset",
                [(topic, partition, offset) for (topic, partition), offset in positions.items()],
            )
        return stored

    def positions(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the next offset to read."""
        return self._positions_locked()

    def count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM examples").fetchone()
        return int(row[0])

    def sequence(self) -> int:
        """How many stores have happened in total: a cursor for "new since the last training"."""
        row = self._db.execute("SELECT value FROM counters WHERE name = 'sequence'").fetchone()
        return int(row[0]) if row else 0

    def examples(self) -> Iterator[LabelledArticle]:
        """Every stored example, oldest first."""
        with closing(self._db.execute("SELECT payload FROM examples ORDER BY sequence")) as rows:
            for (payload,) in rows:
                yield LabelledArticle.model_validate_json(payload)

    def _upsert(self, article: LabelledArticle) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES ('sequence', 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1"
        )
        self._db.execute(
            "INSERT INTO examples VALUES (?, ?, (SELECT value FROM counters WHERE name = "
            "'sequence')) ON CONFLICT(article_id) DO UPDATE SET payload = excluded.payload, "
            "sequence = excluded.sequence",
            (article.id, article.model_dump_json()),
        )

    def _positions_locked(self) -> dict[tuple[str, int], int]:
        rows = self._db.execute("SELECT topic, partition, next_offset FROM positions")
        return {(topic, partition): offset for topic, partition, offset in rows}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"example store {self.path}: {exc}") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
