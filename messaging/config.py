"""kafka-python keyword arguments built from :class:`common.settings.KafkaSettings`."""

from __future__ import annotations

from typing import Any

from common.errors import ConfigError
from common.settings import KafkaSettings


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by every kafka-python client built from ``settings``.

    ``reconnect_backoff_max_ms`` is always set: kafka-python's own default, 30 s, kept workers
    idle for up to 30 s after a restarted broker was back (docs/kafka.md). With SASL, a
    missing or empty username or password (a Secret left unfilled) is refused at start.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap.split(","),
        "security_protocol": settings.security_protocol,
        "client_id": settings.client_id,
        "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms,
    }
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password
        if not settings.sasl_username or password is None or not password.get_secret_value():
            raise ConfigError(
                "TAGSTREAM_KAFKA_SASL_USERNAME and TAGSTREAM_KAFKA_SASL_PASSWORD are required "
                f"with TAGSTREAM_KAFKA_SECURITY_PROTOCOL={settings.security_protocol}"
            )
        config |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": password.get_secret_value(),
        }
    if settings.ssl_cafile:
        config["ssl_cafile"] = settings.ssl_cafile
    return config


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """Every producer of the project: acks from all in-sync replicas, idempotent, compressed
    as ``TAGSTREAM_KAFKA_COMPRESSION_TYPE`` says."""
    codec = settings.compression_type
    return client_config(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if codec == "none" else codec,
    }
