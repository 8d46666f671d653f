"""kafka-python's errors become the few kinds the loops branch on, each keeping its cause."""

from __future__ import annotations

import pytest
from kafka import errors as kafka_errors

from messaging import (
    DeadlineError,
    FatalError,
    FencedError,
    GroupMembership,
    MessagingError,
    RefusedError,
    RetriableError,
)
from messaging.errors import translate, translated


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (kafka_errors.KafkaTimeoutError("no metadata in 60 s"), DeadlineError),
        (kafka_errors.KafkaConnectionError("111 ECONNREFUSED"), RetriableError),
        (kafka_errors.NotLeaderForPartitionError(), RetriableError),
        (kafka_errors.CommitFailedError(), RetriableError),
        (kafka_errors.ProducerFencedError("newer epoch"), FencedError),
        (kafka_errors.InvalidProducerEpochError(), FencedError),
        (kafka_errors.FencedInstanceIdError(), FencedError),
        (kafka_errors.MessageSizeTooLargeError(), RefusedError),
        (ValueError("key must be bytes"), RefusedError),
        (kafka_errors.TopicAuthorizationFailedError(), FatalError),
        (kafka_errors.UnsupportedVersionError(), FatalError),
        (kafka_errors.IllegalStateError("no transaction"), MessagingError),
    ],
)
def test_each_client_error_becomes_its_kind(error: Exception, kind: type[Exception]) -> None:
    translated_error = translate(error)
    assert type(translated_error) is kind
    assert translated_error.__cause__ is error
    assert translated_error.retriable == issubclass(kind, RetriableError)


def test_the_context_manager_raises_the_kind_and_leaves_other_exceptions_alone() -> None:
    with pytest.raises(FencedError, match="newer epoch"), translated():
        raise kafka_errors.ProducerFencedError("newer epoch")
    with pytest.raises(KeyError), translated():
        raise KeyError("not a client error")


def test_a_membership_without_a_generation_cannot_be_fenced_against() -> None:
    assert GroupMembership("g", 3, "member-1", None).is_member
    assert not GroupMembership("g", -1, "", None).is_member
    assert not GroupMembership("g", 3, "", None).is_member
