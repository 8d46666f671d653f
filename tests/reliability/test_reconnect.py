"""Found by the broker-restart scenario: kafka-python 3.0.12 can raise a retriable error
(``KafkaConnectionError: 111 ECONNREFUSED``, from a metadata refresh behind the coordinator
lookup) straight out of ``KafkaConsumer.poll`` while the broker is away. The worker's poll
must treat it as a poll that brought nothing, and keep polling until the client reconnects.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError, UnsupportedVersionError

from common.settings import KafkaSettings
from worker.consumer import KafkaSource
from worker.settings import WorkerSettings

pytestmark = pytest.mark.integration


def test_a_retriable_error_out_of_poll_is_a_poll_that_brought_nothing(
    monkeypatch: pytest.MonkeyPatch, kafka_settings: KafkaSettings, group_id: str
) -> None:
    failures = [KafkaConnectionError("111 ECONNREFUSED")]
    real_poll = KafkaConsumer.poll

    def poll(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_poll(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "poll", poll)
    source = KafkaSource(kafka_settings, WorkerSettings(group_id=group_id), "reconnect")
    try:
        assert source.poll(100) == []
        assert source.poll(100) == []  # the real poll again
        failures.append(UnsupportedVersionError("not retriable"))
        with pytest.raises(UnsupportedVersionError):
            source.poll(100)
    finally:
        source.close()
