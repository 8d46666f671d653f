"""The values that cross the Kafka boundary, free of kafka-python's classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class TopicPartition(NamedTuple):
    """Equal to, and hashed like, kafka-python's ``TopicPartition`` with the same fields."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True)
class GroupMembership:
    """A snapshot of a consumer's group membership, as a transaction commits offsets with it."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None
    raw: Any = field(default=None, repr=False, compare=False)
    """kafka-python's own object, handed back to the producer unchanged."""

    @property
    def is_member(self) -> bool:
        """Whether the broker can fence a transactional commit made with this snapshot.

        After a member finds its membership gone (a frozen process, a broker restart)
        kafka-python resets it to no generation (-1, no member id) until it rejoins, and the
        broker accepts a transactional offset commit that carries no generation without any
        check: a zombie would commit offsets, and outputs, for partitions another member
        already owns.
        """
        return self.generation_id >= 0 and bool(self.member_id)
