"""The kinds of Kafka failure the loops above branch on, translated from kafka-python's.

    common.errors.TagstreamError
    └── MessagingError            any failure talking to Kafka
        ├── RetriableError        may succeed if tried again (a broker away, a leader moving,
        │   │                     a coordinator loading, a rebalance under way)
        │   └── DeadlineError     a wait ran past its deadline (no metadata or buffer space in
        │                         ``max_block_ms``, a flush, a transactional request)
        ├── FencedError           a newer instance owns this transactional id or group
        │                         membership: this client must stop
        ├── RefusedError          this one record is refused every time (too large, invalid)
        ├── UndecodableError      a fetched record batch cannot be decoded; names where
        └── FatalError            configuration, authorization, an unsupported version

Each translated error keeps kafka-python's as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka import errors as kafka_errors

from common.errors import TagstreamError
from messaging.types import TopicPartition


class MessagingError(TagstreamError):
    """Talking to Kafka failed."""


class RetriableError(MessagingError):
    """Trying again later may succeed."""

    retriable = True


class DeadlineError(RetriableError):
    """A request or a wait did not finish within its deadline."""


class FencedError(MessagingError):
    """A newer instance owns this client's transactional id or group membership."""


class RefusedError(MessagingError):
    """The client or the broker refuses this record, and would every time."""


class UndecodableError(MessagingError):
    """A fetched record batch cannot be decoded (an unknown codec, a corrupt batch)."""

    def __init__(self, tp: TopicPartition, offset: int, cause: str) -> None:
        super().__init__(f"record batch of {tp.topic}[{tp.partition}] at offset {offset}: {cause}")
        self.tp, self.offset, self.cause = tp, offset, cause


class FatalError(MessagingError):
    """Configuration, authorization or protocol: trying again will not help."""


FENCED = (
    kafka_errors.ProducerFencedError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.FencedInstanceIdError,
    kafka_errors.TransactionalIdAuthorizationFailedError,
)
REFUSED = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidRecordError,
    kafka_errors.CorruptRecordError,
)
FATAL = (
    kafka_errors.AuthorizationError,
    kafka_errors.SaslAuthenticationFailedError,
    kafka_errors.KafkaConfigurationError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.UnsupportedCodecError,
)
REBALANCED = (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError)


def translate(exc: BaseException) -> MessagingError:
    """The project's kind of ``exc`` (a kafka-python error, or what a client raised for a
    record it would not take), with the original message."""
    message = (
        str(exc) if isinstance(exc, kafka_errors.KafkaError) else f"{type(exc).__name__}: {exc}"
    )
    kind: type[MessagingError]
    if isinstance(exc, MessagingError):
        return exc
    if isinstance(exc, kafka_errors.KafkaTimeoutError):
        kind = DeadlineError
    elif isinstance(exc, FENCED):
        kind = FencedError
    elif isinstance(exc, (*REFUSED, ValueError, TypeError, AssertionError)):
        kind = RefusedError
    elif isinstance(exc, FATAL):
        kind = FatalError
    elif isinstance(exc, REBALANCED) or getattr(exc, "retriable", False):
        kind = RetriableError
    elif isinstance(exc, kafka_errors.KafkaError):
        # kafka-python marks few errors retriable; an unmarked one (IllegalStateError after an
        # abort, say) is this operation failing, not the process: the caller decides.
        kind = MessagingError
    else:
        raise exc
    error = kind(message)
    error.__cause__ = exc
    return error


@contextmanager
def translated() -> Iterator[None]:
    """Raise kafka-python's errors out of the block as the project's kinds."""
    try:
        yield
    except kafka_errors.KafkaError as exc:
        raise translate(exc) from exc
