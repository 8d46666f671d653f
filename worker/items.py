"""What travels between the worker's threads: polled records, and items ready to predict.

``Record`` (one consumed message) comes from the Kafka boundary, :mod:`messaging`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from messaging import Record, TopicPartition
from schemas import Article, ErrorKind, SourceRef


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an item came from, the epoch it was polled in, and when it arrived."""

    tp: TopicPartition
    offset: int
    epoch: int
    key: bytes | None
    timestamp_ms: int
    received_at: datetime

    def ref(self) -> SourceRef:
        return SourceRef(topic=self.tp.topic, partition=self.tp.partition, offset=self.offset)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be predicted."""

    kind: ErrorKind
    message: str


@dataclass(frozen=True, slots=True)
class Item:
    """One message on its way through the batcher: an encoded article, or a rejection.

    ``payload`` keeps the original bytes for a dead letter, should the model fail on it.
    """

    origin: Origin
    payload: bytes
    article: Article | None = None
    token_ids: tuple[int, ...] = ()
    rejection: Rejection | None = None

    @property
    def length(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True, slots=True)
class Polled:
    """A record with the epoch its partition had when it was polled."""

    record: Record
    epoch: int
    received_at: datetime
