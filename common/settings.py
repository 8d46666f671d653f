"""Connection settings that several services share, and the one way settings are loaded.

Every service keeps its own settings class beside its code (``worker.settings``,
``trainer.settings``, ``model.settings``, ``tagstream.stack``); Kafka and Redis connections
are the same for all of them and live here. All classes read ``TAGSTREAM_*`` variables,
are frozen, and fail at start through :func:`load` with a one-line message that names the
variable and what it allows.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def settings_config(prefix: str) -> SettingsConfigDict:
    """The configuration every tagstream settings class uses, for variables ``prefix*``."""
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="ignore", case_sensitive=False)


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (``TAGSTREAM_KAFKA_*``)."""

    model_config = settings_config("TAGSTREAM_KAFKA_")

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    client_id: str = "tagstream"
    reconnect_backoff_max_ms: int = Field(default=1000, ge=50, le=60_000)
    """Longest wait between attempts to reach a broker that keeps refusing. kafka-python's own
    default, 30 s, kept workers idle for up to 30 s after a restarted broker was back
    (docs/reliability.md); 1 s is the Java client's default."""

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments shared by every kafka-python client built from these settings."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }
        if self.security_protocol.startswith("SASL"):
            if self.sasl_username is None or self.sasl_password is None:
                raise ConfigError(
                    "TAGSTREAM_KAFKA_SASL_USERNAME and TAGSTREAM_KAFKA_SASL_PASSWORD are required "
                    f"with TAGSTREAM_KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
                )
            config |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        if self.ssl_cafile:
            config["ssl_cafile"] = self.ssl_cafile
        return config


class RedisSettings(BaseSettings):
    """How to reach Redis (``TAGSTREAM_REDIS_*``); ``rediss://`` URLs use TLS."""

    model_config = settings_config("TAGSTREAM_REDIS_")

    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    namespace: str = "tagstream"
    socket_timeout_s: float = 5.0

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(self.url, **kwargs)``."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
            "health_check_interval": 30,
        }
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        return kwargs


def load(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build ``cls`` from the environment (and ``overrides``), or raise a one-line ConfigError."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(cls, exc)) from None


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    """Name each offending variable and what it allows, on one line."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        variable = f"{prefix}{field}".upper()
        allowed = error.get("ctx", {}).get("expected")
        detail = f"expected {allowed}" if allowed else error["msg"]
        parts.append(f"{variable}={error.get('input')!r}: {detail}")
    return "invalid settings: " + "; ".join(parts)
