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
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    """How the project's producers compress record batches (predictions, dead letters, the
    demo's feed). Consumers read every codec whatever this says. gzip by measurement
    (docs/kafka.md): output 8.6x smaller than none, within 10 % of zstd, worker CPU the same as
    every other codec within noise, and readable by every client without optional libraries."""
    producer_backend: Literal["kafka-python", "confluent-kafka"] = "kafka-python"
    """Which client the worker's output goes through, under either guarantee.
    ``confluent-kafka`` (librdkafka) batches, compresses and sends in C threads, off the GIL,
    at a fraction of kafka-python's CPU per record (docs/benchmarks.md); exactly-once, its
    transactions commit the offsets with the kafka-python consumer's group metadata.
    Everything else (consumers, admin, the trainer) is kafka-python whatever this says."""


class TopicSettings(BaseSettings):
    """How ``tagstream topics create`` makes the project's topics (``TAGSTREAM_TOPICS_*``).

    The names come from the worker's and the trainer's settings. ``replication_factor`` and
    ``min_insync_replicas`` left unset take the cluster's defaults
    (``default.replication.factor``, ``min.insync.replicas``).
    """

    model_config = settings_config("TAGSTREAM_TOPICS_")

    input_partitions: int = Field(default=6, ge=1)
    """Partitions of the input topic: the most workers that do useful work at once."""
    output_partitions: int = Field(default=6, ge=1)
    dlq_partitions: int = Field(default=1, ge=1)
    labelled_partitions: int = Field(default=1, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    retention_ms: int | None = Field(default=None, ge=-1)
    """``retention.ms`` of every topic (-1 keeps records forever); unset: the broker's."""


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
