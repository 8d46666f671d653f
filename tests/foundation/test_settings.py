"""Settings come from TAGSTREAM_* variables and fail at start with the variable's name."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.settings import KafkaSettings, RedisSettings, load
from messaging import client_config


def test_settings_read_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSTREAM_KAFKA_BOOTSTRAP", "h1:9092,h2:9092")
    monkeypatch.setenv("TAGSTREAM_REDIS_URL", "rediss://cache:6380/2")
    assert client_config(load(KafkaSettings))["bootstrap_servers"] == ["h1:9092", "h2:9092"]
    assert load(RedisSettings).url == "rediss://cache:6380/2"


def test_a_wrong_choice_names_the_variable_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAGSTREAM_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ConfigError) as caught:
        load(KafkaSettings)
    message = str(caught.value)
    assert "TAGSTREAM_KAFKA_SECURITY_PROTOCOL='CARRIER_PIGEON'" in message
    assert "'SASL_SSL'" in message
    assert "\n" not in message


def test_sasl_without_credentials_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAGSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="TAGSTREAM_KAFKA_SASL_USERNAME"):
        client_config(load(KafkaSettings))


@pytest.mark.parametrize(
    "empty", ["TAGSTREAM_KAFKA_SASL_USERNAME", "TAGSTREAM_KAFKA_SASL_PASSWORD"]
)
def test_sasl_with_an_empty_credential_is_refused_like_a_missing_one(
    empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes Secret left at its empty placeholders stops the service at start."""
    monkeypatch.setenv("TAGSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TAGSTREAM_KAFKA_SASL_USERNAME", "tagstream")
    monkeypatch.setenv("TAGSTREAM_KAFKA_SASL_PASSWORD", "hunter3")
    assert client_config(load(KafkaSettings))["sasl_plain_username"] == "tagstream"
    monkeypatch.setenv(empty, "")
    with pytest.raises(ConfigError, match="TAGSTREAM_KAFKA_SASL_PASSWORD are required"):
        client_config(load(KafkaSettings))


def test_passwords_are_secrets_that_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSTREAM_REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("TAGSTREAM_KAFKA_SASL_PASSWORD", "hunter3")
    redis_settings, kafka_settings = load(RedisSettings), load(KafkaSettings)
    assert "hunter2" not in repr(redis_settings) and "hunter2" not in str(redis_settings)
    assert "hunter3" not in repr(kafka_settings)
    assert redis_settings.client_kwargs()["password"] == "hunter2"


def test_settings_are_frozen() -> None:
    settings = KafkaSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.bootstrap = "elsewhere:1"  # type: ignore[misc]


def test_every_kafka_client_gets_a_short_reconnect_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python backs off up to 30 s from a broker that refused it; ours stops at 1 s."""
    assert client_config(KafkaSettings())["reconnect_backoff_max_ms"] == 1000
    monkeypatch.setenv("TAGSTREAM_KAFKA_RECONNECT_BACKOFF_MAX_MS", "5000")
    assert client_config(load(KafkaSettings))["reconnect_backoff_max_ms"] == 5000
